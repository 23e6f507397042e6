"""THE generation loop: eval_model.py, the web demo and any server call these functions.

A preallocated KV cache holds the prompt, so each new token costs one single-position forward. Sampling
(temperature, top-k, top-p, repetition penalty: inference/sampling.py), stop tokens, batches of prompts
(left-padded, inference/batching.py), a seed, and streaming that yields text pieces only at character
boundaries. Prompts are fitted to the window by inference/prompt.py.

    from inference.generate import chat
    from inference.sampling import CHAT_SAMPLING
    for piece in chat(model, tokenizer, [{"role": "user", "content": "hi"}], **CHAT_SAMPLING):   # greedy
        print(piece, end="", flush=True)
"""
import time

import torch

from inference.batching import Batch
from inference.prompt import build_prompt


def generate_steps(model, prompts, max_new_tokens=256, temperature=0.0, top_k=0, top_p=1.0,
                   repetition_penalty=1.0, stop_ids=(), seed=None, pad_id=0):
    """Yield the next token of every sequence, (B,) long tensor per step, -1 once a sequence stopped: a
    inference.batching.Batch whose rows all join at the start. Each row has its own sampler seeded with seed,
    so a row samples what it would alone (two equal prompts, the same tokens)."""
    if max_new_tokens < 1:
        return
    batch = Batch(model, pad_id)
    rows = batch.join(prompts, max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop_ids, seed)
    while batch.rows:
        got = {r.id: t for r, t in batch.step()}
        yield torch.tensor([got.get(r.id, -1) for r in rows])


def generate(model, prompts, max_new_tokens=256, stop_ids=(), **sampling):
    """Batch of token-id prompts -> the new tokens of each, stop token excluded."""
    out = [[] for _ in prompts]
    stop_ids = set(stop_ids)
    for token in generate_steps(model, prompts, max_new_tokens, stop_ids=stop_ids, **sampling):
        for i, t in enumerate(token.tolist()):
            if t >= 0 and t not in stop_ids:
                out[i].append(t)
    return out


class StreamDecoder:
    """Turns tokens into text pieces, holding back an incomplete UTF-8 character (e.g. one Chinese
    character split over byte-fallback tokens) until it is whole."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids, self.prefix, self.read = [], 0, 0

    def push(self, token_id):
        self.ids.append(int(token_id))
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        text = self.tokenizer.decode(self.ids[self.prefix:])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return text[len(before):]
        return ""


def stream_generate(model, tokenizer, prompt_ids, max_new_tokens=256, stats=None, **sampling):
    """Yield text pieces of one reply as they decode. stats (a dict), if given, receives prompt_tokens,
    new_tokens, seconds and tokens_per_s when the reply ends."""
    decoder = StreamDecoder(tokenizer)
    stop_ids = tokenizer.stop_ids
    n, t0 = 0, time.perf_counter()
    for token in generate_steps(model, [prompt_ids], max_new_tokens, stop_ids=stop_ids,
                                pad_id=tokenizer.pad_id, **sampling):
        t = int(token[0])
        if t < 0 or t in stop_ids:
            break
        n += 1
        piece = decoder.push(t)
        if piece:
            yield piece
    if stats is not None:
        dt = time.perf_counter() - t0
        stats.update(prompt_tokens=len(prompt_ids), new_tokens=n, seconds=dt,
                     tokens_per_s=n / dt if dt > 0 else 0.0)


def chat(model, tokenizer, messages, system_prompt=None, max_new_tokens=256, stats=None, continuation=False,
         **sampling):
    """Stream the assistant's reply to a conversation (prompt from inference.prompt.build_prompt, cut to the
    window)."""
    ids = build_prompt(tokenizer, messages, system_prompt, continuation, model.config.max_position_embeddings,
                       max_new_tokens)
    return stream_generate(model, tokenizer, ids, max_new_tokens, stats=stats, **sampling)

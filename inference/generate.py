"""THE sampling loop: eval_model.py, the web demo and any server call these functions.

A preallocated KV cache holds the prompt, so each new token costs one single-position forward.
Temperature (0 = greedy), top-k, top-p (Holtzman et al. 2019), repetition penalty (Keskar et al. 2019,
CTRL, sec. 4.1), stop tokens, batches of prompts (left-padded), a seed, and streaming that yields text
pieces only at character boundaries.

    from inference.generate import chat
    for piece in chat(model, tokenizer, [{"role": "user", "content": "hi"}], temperature=0.7):
        print(piece, end="", flush=True)
"""
import time
import warnings

import torch

from tokenizer.tokenizer import encode_chat


class WindowWarning(UserWarning):
    """A prompt or a reply length was cut to fit the model's context window."""


def sample_next(logits, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seen=None,
                generator=None):
    """logits (B, V) float32 -> next token ids (B,)."""
    if repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= top_p     # keep the smallest set reaching top_p
        drop[..., 0] = False                                    # and always the likeliest (top_p 0: greedy)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate_steps(model, prompts, max_new_tokens=256, temperature=0.0, top_k=0, top_p=1.0,
                   repetition_penalty=1.0, stop_ids=(), seed=None, pad_id=0):
    """Yield the next token of every sequence, (B,) long tensor per step, -1 once a sequence stopped: a
    inference.batching.Batch whose rows all join at the start. Each row has its own sampler seeded with seed,
    so a row samples what it would alone (two equal prompts, the same tokens)."""
    from inference.batching import Batch
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


def prompt_budget(window, max_new_tokens):
    """How many prompt tokens a window of `window` positions holds: room is kept for max_new_tokens of
    reply, at most half the window."""
    return window - min(max(max_new_tokens, 1), window // 2)


def build_prompt(tokenizer, messages, system_prompt=None, continuation=False, window=None, max_new_tokens=0):
    """THE prompt of every caller (terminal, web demo, tests, server): the conversation in THE chat
    template, ending where the assistant's reply starts. continuation=True is for a pretrained model,
    which continues text: the last message's text after the BOS token (for tokenizers that have one,
    as the chat template puts it too), no template.

    With window (the model's max_position_embeddings), a prompt that leaves no room for max_new_tokens
    (at most half the window) is cut from the left, after the BOS token and the system prompt, with a
    WindowWarning: the oldest turns go first."""
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    if continuation:
        ids = bos + tokenizer.encode(messages[-1]["content"])
    else:
        ids, _ = encode_chat(tokenizer, messages, add_generation_prompt=True, system_prompt=system_prompt)
    budget = prompt_budget(window, max_new_tokens) if window is not None else len(ids)
    if len(ids) > budget:
        # what is kept: BOS and the system prompt (the template's prefix up to the first turn)
        system = [m for m in messages[:1] if m.get("role") == "system"]
        head = len(bos) if continuation else len(encode_chat(tokenizer, system, system_prompt=system_prompt)[0])
        head = head if head < budget // 2 else len(bos)       # a system prompt too long to keep is cut too
        warnings.warn(f"prompt of {len(ids)} tokens cut to {budget} from the left (the model's window is "
                      f"{window} tokens, {window - budget} kept for the reply)", WindowWarning, stacklevel=2)
        ids = ids[:head] + ids[len(ids) - (budget - head):]
    return ids


def chat(model, tokenizer, messages, system_prompt=None, max_new_tokens=256, stats=None, continuation=False,
         **sampling):
    """Stream the assistant's reply to a conversation (prompt from build_prompt, cut to the window)."""
    ids = build_prompt(tokenizer, messages, system_prompt, continuation, model.config.max_position_embeddings,
                       max_new_tokens)
    return stream_generate(model, tokenizer, ids, max_new_tokens, stats=stats, **sampling)

"""Rollouts of reinforcement learning (trainer/train_grpo.py): G sampled completions of each prompt through
THE decoding batch (inference/batching.py; no second generation loop). A prompt's G rows share its one
prefill, rows that finish leave the batch, and each sampled token's log-probability is kept, so the first
update needs no extra forward for the old policy. Then the tensors the policy loss takes, and the policy's
per-token log-probabilities of the completions (the one forward with gradients: packed rows, a group's
prompt computed once).

Library module:
    from trainer.rollout import PromptSet, sample_groups, token_logps
    groups = sample_groups(model, prompt_ids, G, max_new_tokens, temperature, stop_ids, pad_id, seeds, autocast)
    batch = groups.tensors(pad_id)             # input_ids, attention_mask, completion_mask, old_logps
    logps, aux = token_logps(model, groups, temperature, pad_id)          # (N, C), as completion_mask
"""
import contextlib
import time
from dataclasses import dataclass

import torch

from core.errors import UserError
from dataset.formats import normalize_record
from inference.batching import Batch
from inference.packing import make_rows, make_units, pack
from inference.prompt import build_prompt
from model.lora import unwrap_model


def prompt_record(obj, where):
    """A JSONL line as a prompt (dataset/formats.py's any canonical form): a conversation whose last turn
    is the user's; a last assistant turn (the reference answer of SFT data) is left out. One line otherwise."""
    record = normalize_record(obj, where, "any")
    if "conversations" not in record:
        raise UserError(f'{where}: a prompt is a conversation ({{"conversations": [{{"role": "user", '
                        '"content": ...}]}), not a text record')
    if record["conversations"][-1]["role"] == "assistant":
        record["conversations"] = record["conversations"][:-1]
    if not record["conversations"] or record["conversations"][-1]["role"] != "user":
        raise UserError(f"{where}: the conversation has no user turn to answer")
    return record


def scored(groups, records, max_new_tokens, tokenizer):
    """-> (each completion's text, its record for the rewards: its prompt's fields (records: one per prompt,
    in group order) with "_tokens", "_finished" and "_max_tokens")."""
    G = len(groups.completion_ids) // max(1, len(records))
    texts = [tokenizer.decode(c[:-1] if f else c) for c, f in zip(groups.completion_ids, groups.finished)]
    rows = [{**records[i // G], "_tokens": len(c), "_finished": f, "_max_tokens": max_new_tokens}
            for i, (c, f) in enumerate(zip(groups.completion_ids, groups.finished))]
    return texts, rows


class PromptSet(torch.utils.data.Dataset):
    """Prompt records (a conversation whose last turn is the user's, with the fields the rewards read) and
    their prompt ids (THE chat template, ending where the reply starts). Item i -> {"index", "ids", "record"}."""

    def __init__(self, records, tokenizer, window, max_new_tokens, system_prompt=None):
        self.records = records
        self.samples = [build_prompt(tokenizer, r["conversations"], system_prompt or None, window=window,
                                     max_new_tokens=max_new_tokens) for r in records]

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return {"index": i, "ids": self.samples[i], "record": self.records[i]}


def collate_prompts(items):
    """A micro-batch of prompts stays a list (each is sampled G times, then padded with its completions)."""
    return list(items)


@dataclass
class Groups:
    """G completions of each of a micro-batch's prompts, prompt i's at rows i*G .. i*G+G-1."""
    prompt_ids: list                 # per row: the prompt's ids
    completion_ids: list             # per row: the sampled ids (ending with the end token when it finished)
    sampled_logps: list              # per row: each sampled token's log-probability at sampling time
    finished: list                   # per row: ended with an end token (not cut at max_new_tokens)
    seconds: float = 0.0

    def tensors(self, pad_id):
        """-> {input_ids (N, P+C), attention_mask (N, P+C), completion_mask (N, C), old_logps (N, C),
        prompt_length P}: prompts padded on the left, completions on the right (TRL's layout)."""
        n, P = len(self.prompt_ids), max(map(len, self.prompt_ids))
        C = max(1, max(map(len, self.completion_ids)))
        ids = torch.full((n, P + C), pad_id, dtype=torch.long)
        attn = torch.zeros((n, P + C), dtype=torch.long)
        old = torch.zeros((n, C), dtype=torch.float32)
        for i, (p, c, lp) in enumerate(zip(self.prompt_ids, self.completion_ids, self.sampled_logps)):
            ids[i, P - len(p):P] = torch.tensor(p)
            ids[i, P:P + len(c)] = torch.tensor(c, dtype=torch.long)
            attn[i, P - len(p):P + len(c)] = 1
            old[i, :len(lp)] = torch.tensor(lp)
        return {"input_ids": ids, "attention_mask": attn, "completion_mask": attn[:, P:].clone(),
                "old_logps": old, "prompt_length": P}


def sample_groups(model, prompts, G, max_new_tokens, temperature, stop_ids, pad_id, seeds,
                  autocast=contextlib.nullcontext(), top_p=1.0, top_k=0):
    """G completions of each prompt (token-id lists), row r sampled with seeds[r] (len(prompts) * G seeds),
    the model in eval mode (no dropout) and restored after -> Groups."""
    m = unwrap_model(model)
    was, start = m.training, time.perf_counter()
    m.eval()
    try:
        batch = Batch(m, pad_id=pad_id)
        with autocast:
            rows = batch.join(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                              top_p=top_p, stop_ids=stop_ids, seed=list(seeds), copies=G, keep_logps=True)
            while batch.live():
                batch.step()
    finally:
        m.train(was)
        outside_inference_mode(m)
    stop = set(stop_ids)
    return Groups([p for p in prompts for _ in range(G)], [r.new for r in rows], [r.logps for r in rows],
                  [bool(r.new) and r.new[-1] in stop for r in rows], time.perf_counter() - start)


def outside_inference_mode(module):
    """Buffers made while sampling (the rotary tables grown for a longer sequence) are inference tensors,
    which DDP's buffer broadcast before the next training forward cannot take: ordinary copies replace them."""
    for mod in module.modules():
        for name, b in list(mod.named_buffers(recurse=False)):
            if b is not None and b.is_inference():
                setattr(mod, name, b.clone())


def token_logps(model, groups, temperature=1.0, pad_id=0, row_tokens=512):
    """The model's log-probability of each completion token of groups (Groups) -> ((N, C) float32, 0 past a
    completion's end, C its longest; the MoE aux loss or None), of the temperature-scaled distribution as it
    was sampled from; gradients flow. The rows are packed (inference/packing.py): a group's prompt is
    computed once, each completion after it sees the prompt and itself only, and the output layer runs only
    where a completion token is predicted, so a step costs a prompt plus its completions, not G padded rows."""
    requests = list(zip(groups.prompt_ids, groups.completion_ids))
    window = model.config.max_position_embeddings if hasattr(model, "config") else unwrap_model(model).config.max_position_embeddings
    device = next(unwrap_model(model).parameters()).device
    rows = make_rows(make_units(requests, window), min(window, row_tokens))
    ids, pos, mask, select, where, request, token = pack(rows, pad_id, device)
    res = model(ids, packed=(pos, mask, select))
    logits = res.logits.float()                                           # (n_selected, vocab)
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.log_softmax(logits, dim=-1)[where, token]              # the k-th scored token's
    first = {}
    place = torch.tensor([k - first.setdefault(r, k) for k, r in enumerate(request.tolist())], dtype=torch.long)
    C = max(map(len, groups.completion_ids))
    out = picked.new_zeros((len(requests), C)).index_put((request.to(device), place.to(device)), picked)
    return out, res.aux_loss

"""Positions and attention masks for TinyMindForCausalLM.forward, one function per way a batch comes in.

- plain rows (training, a single prompt, decoding without padding): positions count on from the cache,
  and no mask, so attention runs SDPA's is_causal kernel (plain_positions_and_mask);
- padded rows (attention_mask: batched generation, padded chat batches): positions skip the padding, and
  a boolean mask hides it (padded_positions_and_mask);
- packed rows (evaluation/loglik.py: a question and each of its answers in one row): the caller gives the
  positions, the mask and which logits to keep (packed_positions_and_mask).

A mask is boolean, True where a query may attend to a key, shaped (B or 1, 1, T, S) with T queries and
S = positions cached before + T keys; None means plain causal attention (or none at all for one query).

    from model.masks import positions_and_mask
    position_ids, mask, select = positions_and_mask(input_ids, past, attention_mask, packed)
"""
import torch


def positions_and_mask(input_ids, past, attention_mask=None, packed=None):
    """input_ids (B, T) after `past` cached positions -> (position_ids (B, T), mask or None, select or None).
    select (B, T) bool marks the positions whose logits a packed batch keeps; None keeps all of them."""
    if packed is not None:
        return packed_positions_and_mask(packed)
    if attention_mask is not None:
        return (*padded_positions_and_mask(attention_mask, past, input_ids.shape[1]), None)
    return (*plain_positions_and_mask(*input_ids.shape, past, input_ids.device), None)


def plain_positions_and_mask(B, T, past, device):
    """Plain rows, no padding: positions past .. past + T - 1 in every row. No mask (SDPA's is_causal, or
    one query that sees every key) except for a chunk of T > 1 queries after a cache, which SDPA's
    is_causal would align to the top left: then the causal (1, 1, T, past + T) mask."""
    position_ids = torch.arange(past, past + T, device=device).unsqueeze(0).expand(B, T)   # (B, T)
    mask = None
    if past and T > 1:
        mask = causal_mask(T, past + T, past, device)[None, None]                       # (1, 1, T, S)
    return position_ids, mask


def padded_positions_and_mask(attention_mask, past, T):
    """Padded rows: attention_mask (B, S) with 1 for real tokens and 0 for padding, S = past + T, covers the
    cached positions too. Each token's position counts the real tokens before it (left padding does not
    shift a row's positions). The mask is causal and hides padded keys; it is None when nothing is padded
    and no cache is continued by a chunk, so the plain kernel runs."""
    attention_mask = attention_mask.bool()
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:past + T]        # (B, T)
    mask = None
    if not bool(attention_mask.all()) or (past and T > 1):
        S = past + T
        keys = attention_mask[:, None, None, :S]                                          # (B, 1, 1, S)
        mask = causal_mask(T, S, past, attention_mask.device)[None, None] & keys          # (B, 1, T, S)
        # a padded query row that sees no key would give NaN; let it see itself
        mask = mask | self_mask(T, S, past, attention_mask.device)[None, None]
    return position_ids, mask


def packed_positions_and_mask(packed):
    """Packed rows: packed = (position_ids (B, T), mask (B, 1, T, T) bool, select (B, T) bool), built by the
    caller (evaluation/loglik.py), taken as they are."""
    position_ids, mask, select = packed
    return position_ids, mask, select


def causal_mask(T, S, past, device):
    """(T, S) bool: query i (at position past + i) sees keys 0 .. past + i."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=past)


def self_mask(T, S, offset, device):
    """(T, S) bool, True only at (i, offset + i): each query may always see its own key."""
    m = torch.zeros(T, S, dtype=torch.bool, device=device)
    idx = torch.arange(T, device=device)
    m[idx, offset + idx] = True
    return m

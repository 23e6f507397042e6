"""THE sampler: next-token logits -> the next token, with temperature (0 = greedy), top-k, top-p (Holtzman
et al. 2019) and a repetition penalty (Keskar et al. 2019, CTRL, sec. 4.1). The decoding batch
(inference/batching.py) samples every row with it; CHAT_SAMPLING is THE default sampling of the chat.

Library module, no command:
    from inference.sampling import CHAT_SAMPLING, sample_next
    token = sample_next(logits, **CHAT_SAMPLING)                # (B, V) -> (B,): greedy
    token = sample_next(logits, temperature=0.7, top_p=0.9)     # sampled
"""
from types import MappingProxyType

import torch

# THE chat's default sampling, for every surface a person chats through: eval_model.py's flags, the web demo's
# sliders, the API server's request without temperature/top_p; each reads it from here. Greedy (temperature 0;
# top-p, top-k and the penalty off), not MiniMind's 0.85: the same question gives the same answer, so the chat
# gives the answers README.txt and docs/ show and the tests score (all greedy), and for the questions of fact a
# small model is asked, its likeliest token is its best guess. Per surface: --temperature, the slider, a request's
# temperature.
CHAT_SAMPLING = MappingProxyType({"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0})


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

"""THE log-likelihood scorer: log P(continuation | context) of many (context, continuation) requests, the
numbers lm-evaluation-harness's `loglikelihood` gives, computed with less work.

    from evaluation.loglik import encode_pair, score
    ctx, cont = encode_pair(tokenizer, "Question: 2+2?\\nAnswer:", " 4")
    [(logprob, is_greedy)] = score(model, [(ctx, cont)])

Tokenization is lm-eval's (encode_pair): trailing spaces of the context move to the continuation, the
continuation's tokens are those of encode(context + continuation) after encode(context)'s, no BOS. How it is
faster (the results are the same up to float rounding):
- the requests of a group (a question's answers, by default those with the same context) share the longest
  common prefix of their tokens, computed once: the prefix, then every answer's own tokens after it, each
  seeing the prefix and itself only (a block mask, positions continuing from the prefix). WinoGrande's two
  contexts share the sentence up to the blank;
- an answer's last token is never fed (it predicts nothing that is scored), and the output layer runs only
  at the positions whose next token is scored;
- such units are packed end to end into rows of ROW_TOKENS (a unit sees only itself, positions restart), so
  rows are nearly full and a batch of rows x row length (batch_tokens) has almost no padding.
A context longer than the model's window is cut from the left as lm-eval does (window + 1 tokens in all).
"""
import math

import torch
import torch.nn.functional as F

from inference.packing import ROW_TOKENS, batches, make_rows, make_units, pack, row_length, shared_prefix, unit_length  # noqa: F401


def prefix_token(tokenizer):
    """What lm-eval puts before a text that has no context: the BOS token, else end-of-text."""
    return tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id


def encode_pair(tokenizer, context, continuation):
    """(context ids, continuation ids), split the way lm-eval splits them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        return [prefix_token(tokenizer)], tokenizer.encode(continuation)
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    return ctx, whole[len(ctx):]


@torch.no_grad()
def score(model, requests, batch_tokens=4096, pad_id=0, progress=None, groups=None, row_tokens=ROW_TOKENS):
    """[(context ids, continuation ids)] -> [(sum of log-probabilities, whether greedy decoding would give
    the continuation)], in the order given. groups: lists of request indices that share a prefix (default:
    the requests with the same context); progress(done requests) is called after each batch."""
    if not requests:
        return []
    window = model.config.max_position_embeddings
    device = next(model.parameters()).device
    rows = make_rows(make_units(requests, window, groups), min(window, row_tokens))
    logprob = [0.0] * len(requests)
    greedy = [True] * len(requests)
    for batch in batches(rows, batch_tokens):
        chosen = [rows[r] for r in batch]
        ids, pos, mask, select, where, request, token = pack(chosen, pad_id, device)
        logits = model(ids, packed=(pos, mask, select)).logits                  # (n_selected, vocab)
        logp = F.log_softmax(logits.float(), dim=-1)
        picked = logp[where, token].double().cpu()
        best = (logp[where].argmax(-1) == token).cpu()
        done, at = torch.unique(request, return_inverse=True)         # this batch's requests only
        lp = torch.zeros(len(done), dtype=torch.float64).index_add_(0, at, picked)
        bad = torch.zeros(len(done), dtype=torch.long).index_add_(0, at, (~best).long())
        for i, x, b in zip(done.tolist(), lp.tolist(), bad.tolist()):
            logprob[i], greedy[i] = x, b == 0
        if progress is not None:
            progress(len(done))
    if any(math.isnan(x) for x in logprob):
        raise RuntimeError("a log-likelihood came out NaN: the model's weights or dtype are broken")
    return list(zip(logprob, greedy))

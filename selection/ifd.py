"""IFD scores: Instruction-Following Difficulty (Li et al. 2024, "From Quantity to Quality", NAACL, Eq. 5;
the Cherry_LLM code) and Superfiltering's ifd_ppl (Li et al. 2024, ACL).

For a sample (question Q, answer A), with a scorer model:
    s(A|Q) = mean cross-entropy of A's tokens after Q            (loss_cond)
    s(A)   = the same after the answer prefix alone             (loss_alone)
    ifd    = s(A|Q) / s(A)          ifd_ppl = exp(s(A|Q) - s(A)) = PPL(A|Q) / PPL(A)
High ifd: the question helps little to produce the answer (a hard, informative sample); ifd >= 1: the
question does not help at all (the paper drops those as misaligned).

What Q, A and "the answer alone" are (--prompt):
    alpaca  Cherry's Stanford-Alpaca template (with or without an input), the answer appended with no
            separator; alone: "### Response:" then the answer, as Cherry's code scores it
    chatml  the scorer's own chat template; A = the last reply's tokens as training sees them (with its
            end token); alone: the opening of an assistant turn, no system prompt
    plain   the question's text, then the answer; alone: the answer after the BOS (else EOS) token
Multi-turn samples: A is the last assistant turn, Q everything before it (alpaca and plain write earlier
turns as "role: content" lines before the last question). Truncation (max_length tokens per pass): the
answer is cut from the right to fit after the question, and the same answer tokens are scored in both
passes; a question longer than max_length - 16 is cut from the left (its first token kept). Either sets
"truncated"; a sample with no answer token left has no score.

Every pass of a batch (both passes of every sample, right-padded, so no mask) is one forward with logits
only at the scored positions. Batches are fixed by the sample order before any work, so an interrupted
run, or one split over ranks, computes exactly the same batches.
"""
import math

import torch
import torch.nn.functional as F

from model.tokenizer import encode_chat

PROMPTS = ("alpaca", "chatml", "plain")
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:")
ALPACA_ANSWER = "### Response:"
MIN_ANSWER = 16             # answer tokens a question is cut back to leave room for


def earlier_turns(messages):
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages)


def alpaca_fields(sample):
    """(instruction, input) of a sample: an Alpaca object's own fields, else the last user turn (earlier
    turns written before it)."""
    raw, conv = sample.raw, sample.record["conversations"]
    if isinstance(raw, dict) and isinstance(raw.get("instruction"), str) and not raw.get("history"):
        return raw["instruction"], raw.get("input") or ""
    return earlier_turns(conv[:-2]) + conv[-2]["content"], ""


def start_ids(tokenizer):
    return [tokenizer.bos_id] if tokenizer.bos_id is not None else [tokenizer.eos_id]


def split_sample(sample, tokenizer, prompt):
    """-> (question ids, answer-alone prefix ids, answer ids) of a sample (a selection.samples.Sample)."""
    conv = sample.record["conversations"]
    if prompt == "chatml":
        ids, mask = encode_chat(tokenizer, conv)
        end = len(mask)
        while end > 0 and not mask[end - 1]:        # after the reply's end token the template may add more
            end -= 1
        start = end
        while start > 0 and mask[start - 1]:
            start -= 1
        alone = encode_chat(tokenizer, [], add_generation_prompt=True, system_prompt="")[0]
        return ids[:start], alone, ids[start:end]
    answer = tokenizer.encode(conv[-1]["content"])
    if prompt == "alpaca":
        instruction, inp = alpaca_fields(sample)
        text = (ALPACA_INPUT if inp else ALPACA_NO_INPUT).format(instruction=instruction, input=inp)
        return start_ids(tokenizer) + tokenizer.encode(text), start_ids(tokenizer) + \
            tokenizer.encode(ALPACA_ANSWER), answer
    if prompt == "plain":
        text = earlier_turns([m for m in conv[:-2] if m["role"] != "system"]) + conv[-2]["content"]
        return start_ids(tokenizer) + tokenizer.encode(text), start_ids(tokenizer), answer
    raise ValueError(f"prompt {prompt!r}: use one of {', '.join(PROMPTS)}")


def fit(question, alone, answer, max_length):
    """Cut a sample's passes to max_length -> (question, alone, kept answer, truncated)."""
    truncated = False
    room = max_length - min(len(answer), MIN_ANSWER)
    if len(question) > room:
        question, truncated = question[:1] + question[len(question) - room + 1:], True
    keep = max(0, min(len(answer), max_length - len(question), max_length - len(alone)))
    return question, alone, answer[:keep], truncated or keep < len(answer)


class Pair:
    """One sample's two passes, cut to the window."""

    def __init__(self, sample, tokenizer, prompt, max_length):
        q, alone, a = split_sample(sample, tokenizer, prompt)
        self.line, self.full_answer = sample.line, len(a)
        self.question, self.alone, self.answer, self.truncated = fit(q, alone, a, max_length)

    @property
    def tokens(self):
        return len(self.question) + len(self.alone) + 2 * len(self.answer)


def make_batches(pairs, batch_tokens):
    """Consecutive pairs, each batch at most batch_tokens padded tokens over its 2 x len rows (a pair
    longer than that is a batch of its own): a partition fixed by the order alone."""
    batches, cur, longest = [], [], 0
    for p in pairs:
        width = max(longest, len(p.question) + len(p.answer))
        if cur and 2 * (len(cur) + 1) * width > batch_tokens:
            batches.append(cur)
            cur, width = [], len(p.question) + len(p.answer)
        cur.append(p)
        longest = width
    return batches + ([cur] if cur else [])


@torch.inference_mode()
def score_batch(model, pairs, pad_id):
    """Score lines {"line", "ifd", "ifd_ppl", "loss_cond", "loss_alone", "answer_tokens", "truncated"} of a
    batch of pairs: both passes of every pair in one forward."""
    device = next(model.parameters()).device
    rows = [(p.question, p.answer) for p in pairs] + [(p.alone, p.answer) for p in pairs]
    width = max(len(c) + len(a) for c, a in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (c, a) in enumerate(rows):
        ids[i, :len(c) + len(a)] = torch.tensor(c + a)
        if a:
            labels[i, len(c):len(c) + len(a)] = torch.tensor(a)
    out = model(ids.to(device), labels=labels.to(device), targets_only=True, loss_reduction="sum")
    targets = labels[:, 1:][labels[:, 1:] != -100].to(device)
    losses = F.cross_entropy(out.logits.float(), targets, reduction="none").double()
    sums = torch.zeros(len(rows), dtype=torch.float64, device=device)
    row_of = torch.repeat_interleave(torch.arange(len(rows), device=device),
                                     torch.tensor([len(a) for _, a in rows], device=device))
    sums.index_add_(0, row_of, losses)
    sums = sums.tolist()
    lines = []
    for i, p in enumerate(pairs):
        n = len(p.answer)
        cond, alone = (sums[i] / n, sums[len(pairs) + i] / n) if n else (None, None)
        lines.append({"line": p.line, "ifd": (cond / alone if alone > 0 else math.inf) if n else None,
                      "ifd_ppl": math.exp(cond - alone) if n else None, "loss_cond": cond, "loss_alone": alone,
                      "answer_tokens": n, "truncated": p.truncated})
    return lines

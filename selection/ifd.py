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

Samples are batched by length (fixed before any work, so an interrupted run, or one split over ranks,
computes exactly the same batches); each pass of a batch is one right-padded forward with logits only at
the scored positions.
"""
import math

import torch
import torch.nn.functional as F

from tokenizer.tokenizer import encode_chat

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
    """The pairs sorted by length (longest first, then by line) and cut into batches of at most
    batch_tokens padded tokens per pass (a pair longer than that is a batch of its own): little padding,
    and a partition fixed by the samples alone, so a resumed or sharded run computes the same batches."""
    batches, cur = [], []
    for p in sorted(pairs, key=lambda p: (-(len(p.question) + len(p.answer)), p.line)):
        if cur and (len(cur) + 1) * (len(cur[0].question) + len(cur[0].answer)) > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(p)
    return batches + ([cur] if cur else [])


def answer_loss_sums(model, rows, pad_id):
    """[(context, answer)] -> the summed cross-entropy of each answer, one right-padded forward (no mask
    needed: padding comes after every real token), logits only at answer positions."""
    device = next(model.parameters()).device
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
    row_of = torch.repeat_interleave(torch.arange(len(rows), device=device),
                                     torch.tensor([len(a) for _, a in rows], device=device))
    return torch.zeros(len(rows), dtype=torch.float64, device=device).index_add_(0, row_of, losses).tolist()


@torch.inference_mode()
def score_batch(model, pairs, pad_id):
    """Score lines {"line", "ifd", "ifd_ppl", "loss_cond", "loss_alone", "answer_tokens", "truncated"} of a
    batch of pairs: one forward per pass (each padded to its own longest row)."""
    conds = answer_loss_sums(model, [(p.question, p.answer) for p in pairs], pad_id)
    alones = answer_loss_sums(model, [(p.alone, p.answer) for p in pairs], pad_id)
    lines = []
    for i, p in enumerate(pairs):
        n = len(p.answer)
        cond, alone = (conds[i] / n, alones[i] / n) if n else (None, None)
        lines.append({"line": p.line, "ifd": (cond / alone if alone > 0 else math.inf) if n else None,
                      "ifd_ppl": math.exp(cond - alone) if n else None, "loss_cond": cond, "loss_alone": alone,
                      "answer_tokens": n, "truncated": p.truncated})
    return lines

"""IFD scores: Instruction-Following Difficulty (Li et al. 2024, "From Quantity to Quality", NAACL, Eq. 5;
the Cherry_LLM code) and Superfiltering's ifd_ppl (Li et al. 2024, ACL).

For a sample (question Q, answer A), with a scorer model:
    s(A|Q) = mean cross-entropy of A's tokens after Q            (loss_cond)
    s(A)   = the same after the answer prefix alone             (loss_alone)
    ifd    = s(A|Q) / s(A)          ifd_ppl = exp(s(A|Q) - s(A)) = PPL(A|Q) / PPL(A)
High ifd: the question helps little to produce the answer (a hard, informative sample); ifd >= 1: the
question does not help at all (the paper drops those as misaligned).

What Q, A and "the answer alone" are (--prompt):
    alpaca  Cherry's own scores (cherry_seletion/data_analysis.py --mod cherry, then data_by_IFD.py): the
            Stanford-Alpaca prompt (with or without an input) and the answer tokenized as ONE text; A = the
            tokens after the prompt's own token count; alone: "### Response:" + the answer, one text, A =
            the tokens after "### Response:"'s count. A BOS only where the scorer's tokenizer adds one
            itself (none for SmolLM2). Truncation is Cherry's: the whole text is cut from the right to
            max_length, the answer-alone text to max_length - (prompt tokens) - 2, so a long answer keeps
            fewer tokens alone than after the question; a prompt within 6 tokens of max_length has no score.
    chatml  the scorer's own chat template; A = the last reply's tokens as training sees them (with its
            end token); alone: the opening of an assistant turn, no system prompt
    plain   the question's text, then the answer; alone: the answer after the BOS (else EOS) token
chatml and plain tokenize Q and A apart (A's tokens are the same in both passes) and cut to max_length
their own way: the answer from the right to fit after the question, a question longer than
max_length - 16 from the left (its first token kept). Multi-turn samples: A is the last assistant turn, Q
everything before it (alpaca and plain write earlier turns as "role: content" lines before the last
question). Any cut sets "truncated"; a sample with no answer token left in a pass has no score.

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


def alpaca_texts(sample):
    """(Cherry's Alpaca prompt, the answer) of a sample, as texts."""
    instruction, inp = alpaca_fields(sample)
    prompt = (ALPACA_INPUT if inp else ALPACA_NO_INPUT).format(instruction=instruction, input=inp)
    return prompt, sample.record["conversations"][-1]["content"]


def added_ids(tokenizer):
    """What the scorer's tokenizer puts before a text by itself: its BOS where it adds one (Llama's),
    nothing where it adds none (SmolLM2's, TinyMind's own)."""
    return [tokenizer.bos_id] if tokenizer.bos_id is not None else []


def start_ids(tokenizer):
    return [tokenizer.bos_id] if tokenizer.bos_id is not None else [tokenizer.eos_id]


def cherry_passes(sample, tokenizer, max_length):
    """Cherry's two passes of a sample under --prompt alpaca -> (the prompt's tokens as --mod pre embeds
    them, (question, answer, alone, alone answer, truncated)).

    As data_analysis.py --mod cherry and data_by_IFD.py compute them: a pass's text is tokenized whole
    (tokenizer.encode(text, truncation=True, max_length=m): the tokenizer's own BOS, then the text cut from
    the right to m tokens in all) and its loss list sliced after as many tokens as the text before the
    answer has alone (start_token = len(encode(text[:text.rfind(answer)]))), so a token spanning the seam
    counts as the answer's. The whole text is cut to max_length, the alone text to max_length -
    min(prompt tokens, max_length) - 2; data_by_IFD.py skips a sample where that leaves 4 tokens or fewer."""
    prompt, output = alpaca_texts(sample)
    head = added_ids(tokenizer)
    question = head + tokenizer.encode(prompt)
    alone_length = max_length - min(len(question), max_length) - 2
    if alone_length <= 4:
        return question[:max_length], ([], [], [], [], True)
    whole = head + tokenizer.encode(prompt + output)
    direct = head + tokenizer.encode(ALPACA_ANSWER + output)
    cut, cut_alone = whole[:max_length], direct[:alone_length]
    start, start_alone = len(question), len(head + tokenizer.encode(ALPACA_ANSWER))
    truncated = len(whole) > max_length or len(direct) > alone_length
    return question, (cut[:start], cut[start:], cut_alone[:start_alone], cut_alone[start_alone:], truncated)


def split_sample(sample, tokenizer, prompt):
    """-> (question ids, answer-alone prefix ids, answer ids) of a sample (a selection.samples.Sample) under
    --prompt chatml or plain (alpaca: cherry_passes)."""
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
    if prompt == "plain":
        text = earlier_turns([m for m in conv[:-2] if m["role"] != "system"]) + conv[-2]["content"]
        return start_ids(tokenizer) + tokenizer.encode(text), start_ids(tokenizer), \
            tokenizer.encode(conv[-1]["content"])
    raise ValueError(f"prompt {prompt!r}: use one of {', '.join(PROMPTS)}")


def fit(question, alone, answer, max_length):
    """Cut a chatml or plain sample's passes to max_length -> (question, alone, kept answer, truncated)."""
    truncated = False
    room = max_length - min(len(answer), MIN_ANSWER)
    if len(question) > room:
        question, truncated = question[:1] + question[len(question) - room + 1:], True
    keep = max(0, min(len(answer), max_length - len(question), max_length - len(alone)))
    return question, alone, answer[:keep], truncated or keep < len(answer)


class Pair:
    """One sample's two passes, cut to the window: (question, answer) conditioned, (alone, alone_answer)
    alone; instruction: the question's tokens as an embedding of it reads them (cluster.py)."""

    def __init__(self, sample, tokenizer, prompt, max_length):
        self.line = sample.line
        if prompt == "alpaca":
            self.instruction, passes = cherry_passes(sample, tokenizer, max_length)
        else:
            q, alone, a, truncated = fit(*split_sample(sample, tokenizer, prompt), max_length)
            self.instruction, passes = q, (q, a, alone, a, truncated)
        self.question, self.answer, self.alone, self.alone_answer, self.truncated = passes

    @property
    def scored(self):
        """Whether both passes keep an answer token (else the sample has no score)."""
        return bool(self.answer and self.alone_answer)

    @property
    def tokens(self):
        return len(self.question) + len(self.answer) + len(self.alone) + len(self.alone_answer)


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
    """Score lines {"line", "ifd", "ifd_ppl", "loss_cond", "loss_alone", "answer_tokens",
    "answer_tokens_alone", "truncated"} of a batch of pairs: one forward per pass (each padded to its own
    longest row) over the pairs that keep an answer token in both; the others' scores are null."""
    live = [p for p in pairs if p.scored]
    conds = answer_loss_sums(model, [(p.question, p.answer) for p in live], pad_id) if live else []
    alones = answer_loss_sums(model, [(p.alone, p.alone_answer) for p in live], pad_id) if live else []
    sums = {id(p): (c, a) for p, c, a in zip(live, conds, alones)}
    lines = []
    for p in pairs:
        cond = alone = ifd = ifd_ppl = None
        if p.scored:        # the mean over each pass's own answer tokens (data_by_IFD.py: loss_list.mean())
            cond, alone = sums[id(p)][0] / len(p.answer), sums[id(p)][1] / len(p.alone_answer)
            ifd, ifd_ppl = cond / alone if alone > 0 else math.inf, math.exp(cond - alone)
        lines.append({"line": p.line, "ifd": ifd, "ifd_ppl": ifd_ppl, "loss_cond": cond, "loss_alone": alone,
                      "answer_tokens": len(p.answer), "answer_tokens_alone": len(p.alone_answer),
                      "truncated": p.truncated})
    return lines

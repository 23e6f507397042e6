"""Preference pairs (DPO data): read, check and tokenize {prompt, chosen answer, rejected answer} records.

Accepted on input, one JSON object a line (docs/training.md, "Preference training"):
    MiniMind   {"chosen": [messages ... assistant], "rejected": [messages ... assistant]}: two whole
               conversations that differ in their last (assistant) message only
    flat       {"prompt": "..." | [messages ... user], "chosen": "..." | [{"role": "assistant", ...}],
                "rejected": same as chosen}   (TRL's standard and conversational shapes)
Canonical record: {"prompt": [messages ending with a user turn], "chosen": str, "rejected": str} plus any
other top-level keys. A bad line is one UserError "file:line: ..." naming the field, as for chat data.

Library module; trainer/train_dpo.py uses it:
    from dataset.preference import read_pairs, PreferenceDataset, collate_pairs
    records, n_bad = read_pairs("dataset/music_pairs.jsonl")
    ds = PreferenceDataset(records, tokenizer, max_seq_len=512)
"""
import torch
from torch.utils.data import Dataset

from core.errors import UserError
from dataset.formats import _bad, _check_messages, _from_role_list, check_encodable, iter_jsonl
from dataset.lm_dataset import IGNORE, collate_chat
from tokenizer.tokenizer import encode_chat

FIX_PAIR = ('each line should be {"prompt": "...", "chosen": "...", "rejected": "..."} or MiniMind\'s '
            '{"chosen": [messages], "rejected": [messages]}')
ANSWERS = ("chosen", "rejected")


def _answer(value, where, key):
    """An answer given as a string or as a list of one assistant message -> its text."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        messages = _from_role_list(value, f"{where}: {key!r}", "role", "content")
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise _bad(where, f"{key!r} holds {len(messages)} message(s) "
                       f"({', '.join(m['role'] for m in messages) or 'none'}) where one assistant reply was "
                       "expected", f'write "{key}": [{{"role": "assistant", "content": "..."}}] or a string')
        text = messages[0]["content"]
    else:
        raise _bad(where, f"{key!r} is {type(value).__name__}, not a string or a message list", FIX_PAIR)
    if not text.strip():
        raise _bad(where, f"the {key} answer is empty", "fill in both answers or drop the line")
    return text


def _prompt(value, where):
    if isinstance(value, str):
        messages = [{"role": "user", "content": value}]
    else:
        messages = _from_role_list(value, f"{where}: 'prompt'", "role", "content")
    return _check_messages(messages, f"{where}: 'prompt'", "prompt")


def _split_conversation(value, where, key):
    """MiniMind's whole conversation -> (prompt messages, answer text)."""
    messages = _check_messages(_from_role_list(value, f"{where}: {key!r}", "role", "content"),
                               f"{where}: {key!r}", "chat")
    return messages[:-1], messages[-1]["content"]


def normalize_pair(obj, where):
    """One parsed JSON line -> the canonical pair, or a UserError naming `where` and the field."""
    check_encodable(obj, where)
    if not isinstance(obj, dict):
        raise _bad(where, f"the line is a JSON {type(obj).__name__}, not an object", FIX_PAIR)
    missing = [k for k in ANSWERS if k not in obj]
    if missing:
        keys = ", ".join(sorted(obj)[:6]) or "none"
        raise _bad(where, f"missing {' and '.join(repr(k) for k in missing)} (keys found: {keys})", FIX_PAIR)
    if "prompt" in obj:
        prompt = _prompt(obj["prompt"], where)
        chosen, rejected = (_answer(obj[k], where, k) for k in ANSWERS)
    elif isinstance(obj["chosen"], list) and isinstance(obj["rejected"], list):
        (prompt, chosen), (other, rejected) = (_split_conversation(obj[k], where, k) for k in ANSWERS)
        if prompt != other:
            at = next((i for i, (a, b) in enumerate(zip(prompt, other)) if a != b), min(len(prompt), len(other)))
            raise _bad(where, f"'chosen' and 'rejected' do not share the same prompt (they differ at message {at})",
                       "the two conversations must be the same up to their last assistant reply")
    else:
        raise _bad(where, "no 'prompt', and 'chosen'/'rejected' are not whole conversations", FIX_PAIR)
    if chosen.strip() == rejected.strip():
        raise _bad(where, "the chosen and the rejected answer are the same text",
                   "a pair needs two different answers; drop the line")
    rest = {k: v for k, v in obj.items() if k not in ("prompt", *ANSWERS)}
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **rest}


def iter_pairs(path, skip_bad=False, on_bad=None):
    """(lineno, canonical pair) for each line of a preference JSONL file (dataset/formats.JsonlReader)."""
    return iter_jsonl(path, skip_bad=skip_bad, on_bad=on_bad, normalize=normalize_pair)


def encode_answer(tokenizer, prompt, answer, max_seq_len, system_prompt=None):
    """THE tokenization of one answer to a prompt: the chat template over prompt + the answer -> (ids,
    labels, truncated); labels are the answer's tokens and its end token only (never the prompt's, nor an
    earlier assistant turn's), -100 elsewhere. Cut on the right to max_seq_len."""
    messages = list(prompt) + [{"role": "assistant", "content": answer}]
    ids, mask = encode_chat(tokenizer, messages, system_prompt=system_prompt or None)
    start, _ = encode_chat(tokenizer, prompt, add_generation_prompt=True, system_prompt=system_prompt or None)
    labels = [t if m and i >= len(start) else IGNORE for i, (t, m) in enumerate(zip(ids, mask))]
    truncated = len(ids) > max_seq_len
    return ids[:max_seq_len], labels[:max_seq_len], truncated


class PreferenceDataset(Dataset):
    """Pairs -> (chosen ids, chosen labels, rejected ids, rejected labels) through encode_answer. A pair
    cut to max_seq_len keeps its prompt and the answers' starts (n_truncated); a pair with an answer left
    without any token (a prompt that fills the window) is dropped and counted (n_dropped); a set that
    loses most of its pairs so is refused."""

    def __init__(self, records, tokenizer, max_seq_len, system_prompt=None, where=None):
        self.samples, self.n_truncated, self.n_dropped = [], 0, 0
        for rec in records:
            encoded = [encode_answer(tokenizer, rec["prompt"], rec[k], max_seq_len, system_prompt) for k in ANSWERS]
            if any(all(t == IGNORE for t in labels[1:]) for _, labels, _ in encoded):
                self.n_dropped += 1
                continue
            self.n_truncated += any(cut for _, _, cut in encoded)
            self.samples.append(tuple(torch.tensor(x, dtype=torch.int32) for ids, labels, _ in encoded
                                      for x in (ids, labels)))
        if 2 * self.n_dropped > len(records):
            raise UserError(f"{where + ': ' if where else ''}{self.n_dropped} of {len(records)} pairs keep no answer "
                            f"token after the cut to --max_seq_len {max_seq_len}; raise --max_seq_len")

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        c_ids, c_labels, r_ids, r_labels = self.samples[i]
        return {"chosen_ids": c_ids.long(), "chosen_labels": c_labels.long(), "rejected_ids": r_ids.long(),
                "rejected_labels": r_labels.long(), "index": i}


def collate_pairs(batch, pad_id, pad_to=None):
    """B pairs -> one batch of 2B rows, the chosen answers first, then the rejected ones in the same order
    (as TRL's concatenated forward), padded by dataset.lm_dataset.collate_chat; "index" holds each pair's
    place in its dataset (its precomputed reference log-probabilities)."""
    rows = [{"input_ids": b[f"{k}_ids"], "labels": b[f"{k}_labels"]} for k in ANSWERS for b in batch]
    return {**collate_chat(rows, pad_id, pad_to), "index": torch.tensor([b["index"] for b in batch], dtype=torch.long)}

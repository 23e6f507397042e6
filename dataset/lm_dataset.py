"""Training datasets: packed pretraining windows and chat samples with a loss mask, plus their collate.

Library module, used by the trainers:
    from dataset.lm_dataset import read_records, PretrainDataset, ChatDataset, collate_chat
    records, n_bad = read_records("dataset/music.jsonl", kind="chat")
    ds = ChatDataset([r["conversations"] for r in records], tokenizer, max_seq_len=512)

Labels are ALIGNED with input_ids (same length, -100 = no loss); the model shifts them by one position
(token t predicts token t+1) in TinyMindForCausalLM.forward, and nowhere else. Only the tokenizer is
known here, never the model.
"""
import random
from array import array

import torch
from torch.utils.data import Dataset

from dataset.formats import iter_jsonl
from dataset.streaming import sample_key, val_count
from core.errors import UserError
from tokenizer.tokenizer import encode_chat

IGNORE = -100


def read_records(path, kind, skip_bad=False, normalize=None):
    """Read and validate a whole JSONL file -> ([(lineno, record), ...], n_bad). All of it is checked
    before any training output is written; a bad line is a UserError "file:line: ..." unless skip_bad.
    normalize(obj, where) replaces the kind's canonical forms (dataset/preference.normalize_pair)."""
    reader = iter_jsonl(str(path), skip_bad=skip_bad, kind=kind, normalize=normalize)
    records = list(reader)
    if not records:
        raise UserError(f"{path}: no usable line ({reader.n_bad} bad lines skipped); fix the file")
    return records, reader.n_bad


def split_records(records, val_ratio, seed):
    """Seeded hold-out split of [(lineno, record)] -> (train, val), by unique sample: val_count(u,
    val_ratio) of the u unique samples (dataset.streaming.sample_key) go to val with all their copies, so a
    mix that repeats a file never validates on a sample it trains on. Without copies: a seeded shuffle,
    val the first round(n * val_ratio) records (at least one), both kept in file order."""
    copies = {}             # sample key -> indices of its records, in order of first appearance
    for i, (_, rec) in enumerate(records):
        copies.setdefault(sample_key(rec), []).append(i)
    samples = list(copies.values())
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    held = {i for s in order[:val_count(len(samples), val_ratio)] for i in samples[s]}
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


class PretrainDataset(Dataset):
    """Every text + eos concatenated into one token stream, cut into full max_seq_len windows (no padding).

    The last partial window is dropped; a corpus shorter than one window gives one shorter window.
    """

    def __init__(self, texts, tokenizer, max_seq_len):
        stream = array("i")            # 4 bytes a token, not a Python int's 28+
        for text in texts:
            stream.extend(tokenizer.encode(text))
            stream.append(tokenizer.eos_id)
        self.n_tokens = len(stream)
        n = len(stream) // max_seq_len
        tokens = torch.frombuffer(stream, dtype=torch.int32) if len(stream) else torch.zeros(0, dtype=torch.int32)
        # (n, max_seq_len) windows; a corpus shorter than one window gives a single shorter one
        self.windows = tokens[:n * max_seq_len].view(n, max_seq_len) if n else tokens.view(1, -1)

    def __len__(self):
        return self.windows.shape[0]

    def __getitem__(self, i):
        ids = self.windows[i].long()
        return {"input_ids": ids, "labels": ids}   # aligned; the model shifts


def collate_pretrain(batch):
    return {"input_ids": torch.stack([b["input_ids"] for b in batch]),
            "labels": torch.stack([b["labels"] for b in batch])}


class ChatDataset(Dataset):
    """Conversations -> (input_ids, labels) through THE chat template (tokenizer.tokenizer.encode_chat).

    labels = ids where the template's loss mask is 1 (assistant replies and their end token), else -100;
    loss_on="all" puts loss on every token. Samples longer than max_seq_len are truncated and counted
    (n_truncated); n_no_target counts samples left without any target token. Those train nothing and
    validate nothing (the validation loss is a mean over target tokens, so it is over the others); a set
    in which most samples keep none (a --system_prompt that fills the window) is refused: its run would
    learn from a few samples, and a validation set of none would log a loss of 0 over no token.
    """

    def __init__(self, conversations, tokenizer, max_seq_len, loss_on="assistant", system_prompt=None, where=None):
        self.samples = []
        self.n_truncated = self.n_no_target = 0
        for messages in conversations:
            ids, mask = encode_chat(tokenizer, messages, system_prompt=system_prompt or None)
            if len(ids) > max_seq_len:
                ids, mask = ids[:max_seq_len], mask[:max_seq_len]
                self.n_truncated += 1
            labels = list(ids) if loss_on == "all" else [t if m else IGNORE for t, m in zip(ids, mask)]
            if all(t == IGNORE for t in labels[1:]):
                self.n_no_target += 1
            self.samples.append((torch.tensor(ids, dtype=torch.int32), torch.tensor(labels, dtype=torch.int32)))
        if 2 * self.n_no_target > len(self.samples):
            n, total, system = self.n_no_target, len(self.samples), bool(system_prompt)
            what = "no conversation keeps a" if n == total else f"{n} of {total} conversations keep no"
            raise UserError(f"{where + ': ' if where else ''}{what} token to train on after the cut to --max_seq_len "
                            f"{max_seq_len} (with --loss_on {loss_on}{', and the --system_prompt' * system}); raise "
                            f"--max_seq_len{' or shorten the system prompt' * system}")

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        ids, labels = self.samples[i]
        return {"input_ids": ids.long(), "labels": labels.long()}


def collate_chat(batch, pad_id, pad_to=None):
    """Dynamic padding: pad on the right to the batch's longest sample (or to pad_to), labels -100.

    attention_mask marks real tokens. Because padding is on the right, the causal mask alone already keeps
    every real token from seeing a pad, so the loop may skip the mask and keep the fast causal kernel.
    """
    T = pad_to or max(len(b["input_ids"]) for b in batch)
    B = len(batch)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        input_ids[i, :n] = b["input_ids"]
        labels[i, :n] = b["labels"]
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def load_split(data_path, val_path, val_ratio, seed, kind, skip_bad=False, normalize=None):
    """Training and validation records -> (train, val, info). Validation comes from val_path when given,
    else a seeded val_ratio hold-out of data_path; info records where it came from (and which lines)."""
    records, n_bad = read_records(data_path, kind, skip_bad, normalize)
    if val_path:
        val, val_bad = read_records(val_path, kind, skip_bad, normalize)
        train, info = records, {"val_path": str(val_path), "val_lines": None}
        n_bad += val_bad
    else:
        train, val = split_records(records, val_ratio, seed)
        info = {"val_path": str(data_path) if val else None, "val_lines": [n for n, _ in val] or None}
    info["n_bad"] = n_bad
    return [r for _, r in train], [r for _, r in val], info

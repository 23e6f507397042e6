"""Shuffling, deduplicating and sampling JSONL files larger than memory, in one streaming pass each.

Shuffles go through seeded random bucket files on disk, deduplication through hash-partitioned bucket
files, and exact-count sampling (fractions, splits) through selection sampling (Knuth, TAOCP vol. 2,
3.4.2 S). A split holds out unique samples with all their copies (hold_out; dataset/lm_dataset.py's
split_records applies the same rule in memory). Library module; the command is scripts/prepare_data.py.
"""
import contextlib
import hashlib
import heapq
import json
import math
import os
import tempfile
import unicodedata

from dataset.formats import dumps

BUCKET_BYTES = 64 << 20  # one shuffle/dedupe bucket held in memory at a time
MAX_BUCKETS = 256        # open temp files at once; buckets grow beyond BUCKET_BYTES past 16 GB
FILE_BUFFER = 4096       # write buffer per bucket file: peak memory ~ MAX_BUCKETS * 4 KB + one bucket


def select_indices(n, k, rng):
    """Yield True/False for each of n items so that exactly k are True, uniformly (selection sampling)."""
    chosen = 0
    for seen in range(n):
        take = rng.random() * (n - seen) < (k - chosen)
        chosen += take
        yield take


def shuffle_lines(lines, total_bytes, rng, tmp_dir, bucket_bytes=BUCKET_BYTES):
    """Yield the given text lines (each ending in newline) in a seeded random order.

    Each line goes to a random bucket file, then each bucket is shuffled in memory: a uniform random
    permutation whose memory is one bucket plus a small write buffer per bucket, whatever the input size.
    """
    n_buckets = max(1, min(MAX_BUCKETS, math.ceil(total_bytes / bucket_bytes)))
    if n_buckets == 1:
        buf = list(lines)
        rng.shuffle(buf)
        yield from buf
        return
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix=".shuffle") as d:
        files = [open(os.path.join(d, str(i)), "w+b", buffering=FILE_BUFFER) for i in range(n_buckets)]
        try:
            for line in lines:
                files[rng.randrange(n_buckets)].write(line.encode("utf-8"))
            for f in files:
                f.seek(0)
                buf = f.readlines()
                f.close()
                rng.shuffle(buf)
                for b in buf:
                    yield b.decode("utf-8")
                buf = None
        finally:
            for f in files:
                f.close()


def sample_key(record):
    """THE identity of a training sample: a hash of its conversations (or text) as canonical JSON, so the
    copies a mix writes (FILE:3) are one sample whatever else their records carry ("answers", "id"). A
    preference pair is its prompt: the pairs of one question are one sample (a split keeps them together)."""
    sample = record["conversations"] if "conversations" in record else record.get("prompt", record.get("text"))
    text = json.dumps(sample, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def val_count(n_samples, val_ratio):
    """How many of n unique samples a hold-out split puts in validation: round(n * val_ratio), at least one
    and leaving at least one to train on; 0 with fewer than two samples or no val_ratio."""
    if n_samples < 2 or val_ratio <= 0:
        return 0
    return min(n_samples - 1, max(1, round(n_samples * val_ratio)))


def dedupe_key(record, mode):
    """Hash of a record for deduplication: exact JSON, or whitespace/case/width-normalised text."""
    if mode == "exact":
        s = dumps(record)
    else:
        if "text" in record and "conversations" not in record:
            s = record["text"]
        else:
            s = "\x1e".join(m["role"] + "\x1f" + m["content"] for m in record["conversations"])
        s = " ".join(unicodedata.normalize("NFKC", s).lower().split())
    return hashlib.blake2b(s.encode("utf-8"), digest_size=12).hexdigest()


@contextlib.contextmanager
def repeats(records, total_bytes, tmp_dir, key, bucket_bytes=BUCKET_BYTES):
    """The records of (lineno, record) pairs that repeat an earlier one (the same key(record)): the with
    block gets (number of unique records, iterator of (lineno, lineno of its first copy) in increasing lineno).

    Keys are partitioned by hash into bucket files; each bucket fits in memory and finds its own
    repeats; the sorted per-bucket lists are merged lazily.
    """
    n_buckets = max(1, min(MAX_BUCKETS, math.ceil(total_bytes / 4 / bucket_bytes)))
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix=".dedupe") as d, contextlib.ExitStack() as files:
        parts = [files.enter_context(open(os.path.join(d, f"{i}.txt"), "w+b", buffering=FILE_BUFFER))
                 for i in range(n_buckets)]
        n_records = n_repeats = 0
        for lineno, rec in records:
            k = key(rec)
            parts[int(k[:8], 16) % n_buckets].write(f"{k} {lineno}\n".encode("ascii"))
            n_records += 1
        drops = []
        for i, f in enumerate(parts):
            f.seek(0)
            first = {}
            drop = files.enter_context(open(os.path.join(d, f"{i}.drop"), "w+b", buffering=FILE_BUFFER))
            for row in f:
                k, lineno = row.split()
                if k in first:
                    drop.write(lineno + b" " + first[k] + b"\n")
                    n_repeats += 1
                else:
                    first[k] = lineno
            f.close()
            first = None
            drop.seek(0)
            drops.append(drop)
        yield n_records - n_repeats, heapq.merge(*[(tuple(map(int, row.split())) for row in dr) for dr in drops])


def duplicate_linenos(records, total_bytes, tmp_dir, mode, bucket_bytes=BUCKET_BYTES):
    """Yield, in increasing order, the line numbers of records that repeat an earlier record."""
    with repeats(records, total_bytes, tmp_dir, lambda rec: dedupe_key(rec, mode), bucket_bytes) as (_, found):
        for lineno, _ in found:
            yield lineno


def hold_out(read, total_bytes, tmp_dir, val_ratio, rng, bucket_bytes=BUCKET_BYTES):
    """Yield (record, goes to validation) for the (lineno, record) pairs of read(), which is called twice.

    THE split by unique sample, streamed: val_count(u, val_ratio) of the u unique samples (sample_key),
    drawn by selection sampling in order of first appearance, go to validation with all their copies, so
    no sample is on both sides. Without copies this is selection sampling of the records. Memory: the
    buckets of repeats() and one bit per line.
    """
    with repeats(read(), total_bytes, tmp_dir, sample_key, bucket_bytes) as (n_unique, found):
        picks = select_indices(n_unique, val_count(n_unique, val_ratio), rng)
        held = bytearray()          # bit lineno set: that line went to validation
        repeat = next(found, None)
        for lineno, rec in read():
            if repeat and repeat[0] == lineno:
                val, repeat = has_bit(held, repeat[1]), next(found, None)
            else:
                val = next(picks)
            if val:
                set_bit(held, lineno)
            yield rec, val


def has_bit(bits, i):
    return i >> 3 < len(bits) and bool(bits[i >> 3] >> (i & 7) & 1)


def set_bit(bits, i):
    """Set bit i of a bytearray, growing it (by doubling) as needed."""
    if i >> 3 >= len(bits):
        bits.extend(bytes(max(len(bits), (i >> 3) + 1 - len(bits))))
    bits[i >> 3] |= 1 << (i & 7)

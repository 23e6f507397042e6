"""Shuffling, deduplicating and sampling JSONL files larger than memory, in one streaming pass each.

Shuffles go through seeded random bucket files on disk, deduplication through hash-partitioned bucket
files, and exact-count sampling (fractions, splits) through selection sampling (Knuth, TAOCP vol. 2,
3.4.2 S). Library module; the command is scripts/prepare_data.py.
"""
import hashlib
import heapq
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


def duplicate_linenos(records, total_bytes, tmp_dir, mode, bucket_bytes=BUCKET_BYTES):
    """Yield, in increasing order, the line numbers of records that repeat an earlier record.

    Keys are partitioned by hash into bucket files; each bucket fits in memory and finds its own
    repeats; the sorted per-bucket lists are merged lazily.
    """
    n_buckets = max(1, min(MAX_BUCKETS, math.ceil(total_bytes / 4 / bucket_bytes)))
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix=".dedupe") as d:
        parts = [open(os.path.join(d, f"{i}.txt"), "w+b", buffering=FILE_BUFFER) for i in range(n_buckets)]
        try:
            for lineno, rec in records:
                key = dedupe_key(rec, mode)
                parts[int(key[:8], 16) % n_buckets].write(f"{key} {lineno}\n".encode("ascii"))
            drops = []
            for i, f in enumerate(parts):
                f.seek(0)
                seen = set()
                drop = open(os.path.join(d, f"{i}.drop"), "w+b", buffering=FILE_BUFFER)
                for row in f:
                    key, lineno = row.split()
                    if key in seen:
                        drop.write(lineno + b"\n")
                    else:
                        seen.add(key)
                f.close()
                seen = None
                drop.seek(0)
                drops.append(drop)
            try:
                yield from heapq.merge(*[(int(x) for x in dr) for dr in drops])
            finally:
                for dr in drops:
                    dr.close()
        finally:
            for f in parts:
                f.close()

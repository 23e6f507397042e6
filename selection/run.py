"""A scoring run over a data file: resumable and shardable (torchrun), with a progress bar.

Each rank scores the batches b with b % world_size == rank (the batches fixed up front by
selection.ifd.make_batches) and appends each finished batch's lines, in one write, to its part file
{scores}.part{rank}of{world}; a run started again with the same settings ({scores}.run.json records them)
skips the lines its part already has (a torn last line is scored again). When every rank is done, rank 0
checks that every sample is scored once, merges the parts, sorted by line, into the scores file
(atomically) and removes them.

    from selection.run import score_file
    score_file(samples, loaded, "scores.jsonl", prompt="alpaca", max_length=512, batch_tokens=1024, dist=dist)
"""
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from dataset.formats import dumps
from core.atomic import write_text
from core.errors import UserError
from trainer.distributed import barrier
from selection.ifd import Pair, make_batches, score_batch


def part_path(scores, rank, world):
    return Path(f"{scores}.part{rank}of{world}")


def read_lines(path):
    """(the score lines of a (part) file, whether it ends cleanly). A torn last line (an interrupted
    write) is left out; a file that does not end in a newline after its last whole line is not clean."""
    if not Path(path).is_file():
        return [], True
    text = Path(path).read_text(encoding="utf-8")
    rows, lines = [], text.splitlines()
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows, len(rows) == len(lines) and (not text or text.endswith("\n"))


def append_lines(path, rows):
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def rewrite_clean(path, rows):
    """A part file that ended in a torn line is rewritten without it before appending."""
    write_text(path, "".join(dumps(r) + "\n" for r in rows))


SCORING = 2       # the scoring's version: 2 = Cherry_LLM's tokens and slicing for --prompt alpaca (a part
                  # scored by an earlier version is not continued: the settings differ)


def settings_path(scores):
    return Path(f"{scores}.run.json")


def check_settings(scores, settings, dist):
    """A run continues only with the settings it started with (else its parts would mix other scores):
    {scores}.run.json records them; another one is one line."""
    path = settings_path(scores)
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != settings:
            diff = ", ".join(f"{k} {old.get(k)!r} (now {v!r})" for k, v in settings.items() if old.get(k) != v)
            raise UserError(f"{scores}: an unfinished run of it used other settings: {diff}; run it again with "
                            "those to finish it (its scores are kept), or give another -o to score afresh")
    elif dist.is_main:
        write_text(path, json.dumps(settings, indent=2) + "\n")
    barrier(dist)


def merge_parts(scores, samples, world):
    """The rows of every part, one per sample, sorted by line. A line scored twice (same settings, so the
    same score) is kept once; a sample not scored leaves the parts as they are, to be finished."""
    by_line = {}
    for rank in range(world):
        for r in read_lines(part_path(scores, rank, world))[0]:
            by_line.setdefault(r["line"], r)
    lines = sorted(s.line for s in samples)
    missing, extra = set(lines) - set(by_line), set(by_line) - set(lines)
    if missing or extra:
        raise UserError(f"{scores}: {len(missing):,} samples not scored yet" + (f", {len(extra):,} scores of lines "
                        "the data no longer has (was it edited?)" if extra else "") + f"; the scores are kept in "
                        f"{Path(scores).name}.part*: run the same command again to finish, or give another -o")
    return [by_line[n] for n in lines]


def batch_cost(batch):
    """The padded tokens of a batch's two passes: what its time goes with."""
    return len(batch) * (max(len(p.question) + len(p.answer) for p in batch) +
                         max(len(p.alone) + len(p.alone_answer) for p in batch))


class ScoringBar:
    """The progress bar of a scoring run: samples done and samples/s, its percentage and time left counted
    in padded tokens (the longest batches come first, so a count of samples would promise too soon an
    end); in a log rather than a terminal, a line every 30 s."""

    def __init__(self, mine, todo, enabled=True):
        self.total, self.done = sum(len(b) for b in mine), sum(len(b) for b in mine) - sum(len(b) for b in todo)
        self.new, self.t0 = 0, time.time()
        self.bar = tqdm(total=sum(batch_cost(b) for b in mine), initial=sum(batch_cost(b) for b in mine) -
                        sum(batch_cost(b) for b in todo), desc="scoring", disable=not enabled, dynamic_ncols=True,
                        mininterval=0.1 if sys.stderr.isatty() else 30,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
        self.bar.set_postfix_str(f"{self.done:,}/{self.total:,} samples", refresh=False)

    def update(self, batch):
        self.done, self.new = self.done + len(batch), self.new + len(batch)
        rate = self.new / max(time.time() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{self.done:,}/{self.total:,} samples, {rate:.1f} samples/s", refresh=False)
        self.bar.update(batch_cost(batch))

    def close(self):
        self.bar.close()


def score_file(samples, loaded, scores, prompt, max_length, batch_tokens, dist, progress=True, say=print):
    """Score every sample into the scores file (see the module doc); returns its path."""
    model, tok = loaded.model, loaded.tokenizer
    Path(scores).parent.mkdir(parents=True, exist_ok=True)
    check_settings(scores, {"model": loaded.info["checkpoint"], "adapter": (loaded.info.get("adapter") or {}).get(
        "path"), "dtype": loaded.info.get("dtype"), "prompt": prompt, "max_length": max_length, "scoring": SCORING,
        "batch_tokens": batch_tokens, "processes": dist.world_size, "samples": len(samples)}, dist)
    pairs = [Pair(s, tok, prompt, max_length) for s in samples]
    mine = [b for i, b in enumerate(make_batches(pairs, batch_tokens)) if i % dist.world_size == dist.rank]
    part = part_path(scores, dist.rank, dist.world_size)
    done_rows, clean = read_lines(part)
    if not clean:
        rewrite_clean(part, done_rows)          # a torn last line, or a whole one without its newline
    done = {r["line"] for r in done_rows}
    todo = [b for b in mine if not all(p.line in done for p in b)]
    if done and dist.is_main:
        say(f"resuming {scores}: {len(done_rows):,} samples already scored")
    bar = ScoringBar(mine, todo, enabled=progress and dist.is_main)
    for batch in todo:                  # a batch whose lines were partly written is scored again, whole
        append_lines(part, [r for r in score_batch(model, batch, tok.pad_id) if r["line"] not in done])
        bar.update(batch)
    bar.close()
    barrier(dist)
    if dist.is_main:
        write_text(scores, "".join(dumps(r) + "\n" for r in merge_parts(scores, samples, dist.world_size)))
        for rank in range(dist.world_size):
            part_path(scores, rank, dist.world_size).unlink(missing_ok=True)
        settings_path(scores).unlink(missing_ok=True)
    barrier(dist)
    return Path(scores)

"""Selection by IFD: the top --ratio or --count samples by ifd (or ifd_ppl), the paper's filters first, and
the report of what was kept (stats and a histogram of the scores with the cut marked). The bottom and a
random draw of as many are the baselines a study compares the top with.

    from selection.select import choose, histogram
    kept, stats = choose(score_rows, ratio=0.1)
    kept, stats = choose(score_rows, count=1690, pick="random", keep_above_one=True, seed=42)
"""
import math
import random
from pathlib import Path

import numpy as np

from core.atomic import atomic_open

BY = ("ifd", "ifd_ppl")
PICKS = ("top", "bottom", "random")


def side_paths(output):
    """The files `select` writes beside its output: (stats JSON, histogram PNG)."""
    output = Path(output)
    return output.with_name(output.name + ".stats.json"), output.with_name(output.name + ".hist.png")


def cherry_paths(output):
    """The files `cherry` writes beside its output: (the clustered sample, the brief SFT's folder, the scores)."""
    output = Path(output)
    return tuple(output.with_name(output.name + ext) for ext in (".pre.jsonl", ".cherry", ".scores.jsonl"))


def choose(rows, ratio=None, count=None, by="ifd", keep_above_one=False, min_answer_tokens=0, pick="top",
           seed=42):
    """-> (the chosen lines, in file order; stats). Dropped first: samples without a score, with fewer
    than min_answer_tokens answer tokens, and (unless keep_above_one) those with ifd >= 1 (the question
    does not help: misaligned, in the paper). Of the rest, the count, or ratio of them (Cherry's
    data_by_IFD: the rate is of the samples left after the filters): with the highest score (pick "top"),
    the lowest ("bottom"), or drawn at random with seed ("random", the scores unused past the filters)."""
    if (ratio is None) == (count is None):
        raise ValueError("choose: give exactly one of ratio, count")
    if pick not in PICKS:
        raise ValueError(f"choose: pick must be one of {PICKS}")
    def has(r):                                 # a score that is a number (NaN counts as none)
        return r.get(by) is not None and r[by] == r[by]
    no_score = [r for r in rows if not has(r)]
    short = [r for r in rows if has(r) and r["answer_tokens"] < min_answer_tokens]
    scored = [r for r in rows if has(r) and r["answer_tokens"] >= min_answer_tokens]
    above = [r for r in scored if r["ifd"] >= 1]
    eligible = scored if keep_above_one else [r for r in scored if r["ifd"] < 1]
    n = count if count is not None else math.floor(len(eligible) * ratio + 1e-9)
    n = min(n, len(eligible))
    if pick == "random":
        kept = random.Random(seed).sample(sorted(eligible, key=lambda r: r["line"]), n)
    else:
        sign = -1 if pick == "top" else 1
        kept = sorted(eligible, key=lambda r: (sign * r[by], r["line"]))[:n]
    stats = {"samples": len(rows), "without_score": len(no_score), "below_min_answer_tokens": len(short),
             "ifd_at_least_1": len(above), "ifd_at_least_1_dropped": 0 if keep_above_one else len(above),
             "eligible": len(eligible), "selected": len(kept), "by": by, "pick": pick,
             "cut": kept[-1][by] if kept and pick != "random" else None,
             "selected_mean": sum(r[by] for r in kept) / len(kept) if kept else None,
             "eligible_mean": sum(r[by] for r in eligible) / len(eligible) if eligible else None,
             "truncated": sum(bool(r.get("truncated")) for r in rows)}
    return sorted(r["line"] for r in kept), stats


def histogram(rows, by, cut, path, title, pick="top"):
    """A PNG of the scores' distribution with the selection's cut marked (kept: above it for pick "top",
    below for "bottom"; a random draw has none)."""
    import matplotlib                       # matplotlib: ~1 s of start-up, only when a chart is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt         # after use("Agg"): no display needed
    values = [r[by] for r in rows if r.get(by) is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(values, bins=50, color="#4C72B0")
    if cut is not None:
        kept = "above" if pick == "top" else "below"
        ax.axvline(cut, color="#C44E52", linestyle="--", label=f"cut {cut:.3f} (kept: {kept})")
    ax.axvline(1.0, color="gray", linestyle=":", label=f"{by} = 1")
    ax.set_xlabel(by)
    ax.set_ylabel("samples")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def ranks(values):
    """1-based ranks, ties sharing their average rank (one sort)."""
    v = np.asarray(values, dtype=float)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])          # 0-based rank of each value's first copy
    return (first + (counts + 1) / 2)[inverse]


def spearman(a, b):
    """Spearman's rank correlation of two equally long lists (Pearson's r of their ranks)."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / denom) if denom else float("nan")


def compare(rows_a, rows_b, by="ifd", top=0.1):
    """Two scorers' scores of the same samples (Superfiltering: does a small scorer rank like a big one?)
    -> {"samples", "spearman", "top_overlap"}: the rank correlation over the samples both scored, and the
    share of the top `top` of a that is also in the top of b."""
    a = {r["line"]: r[by] for r in rows_a if r.get(by) is not None}
    b = {r["line"]: r[by] for r in rows_b if r.get(by) is not None}
    lines = sorted(set(a) & set(b))
    if len(lines) < 2:
        raise ValueError("compare: fewer than 2 samples scored by both")
    k = max(1, int(len(lines) * top))
    best_a = set(sorted(lines, key=lambda n: -a[n])[:k])
    best_b = set(sorted(lines, key=lambda n: -b[n])[:k])
    return {"samples": len(lines), "spearman": spearman([a[n] for n in lines], [b[n] for n in lines]),
            "top": top, "top_overlap": len(best_a & best_b) / k}

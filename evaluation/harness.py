"""Multiple-choice benchmarks scored the way lm-evaluation-harness scores them, on any loaded model.

    from evaluation.harness import evaluate_task
    result = evaluate_task(loaded, load_task("arc_easy"), num_fewshot=0, limit=200)
    result["metrics"]["acc"]          # {"value": 0.43, "stderr": 0.035}

For each item every choice is scored as log P(delimiter + choice | context) (evaluation/loglik.py):
- acc: the choice with the highest sum of log-probabilities is the prediction;
- acc_norm: the same after dividing by the choice's length in characters (lm-eval's length normalisation);
- stderr: the sample standard deviation over items / sqrt(n), as lm-eval reports it.
WinoGrande is scored by partial evaluation: one context per option, the rest of the sentence scored.
Few-shot examples (--num_fewshot k) are k other items (the task's few-shot split where it has one, else the
scored split without the item itself), drawn with a seeded generator per item, so a run is reproducible
and an item's examples do not depend on --limit; MMLU takes its subject's first k dev questions, as
lm-eval does. Examples are "context delimiter answer" joined by blank lines, after the task's description,
as lm-eval formats them; but the wheel has no train splits, which lm-eval draws from, so k > 0 scores use
other examples than lm-eval's and are comparable with each other, not with published few-shot numbers.
--limit N takes the first N items (of each subject, for MMLU, as lm-eval limits each subtask).
With chat=True the prompt is one user turn in the model's chat template (inference.prompt.build_prompt), the
task's description its system prompt, and the answer is scored as the assistant's reply; off by default,
as in lm-eval.
"""
import math
import random
import time

from core.errors import UserError
from inference.prompt import build_prompt
from evaluation.loglik import encode_pair, score

DELIMITER = " "
DEFAULT_SEED = 1234                          # lm-eval's default few-shot seed


def item_contexts(item):
    """One context per choice (a shared context repeated)."""
    ctx = item["context"]
    return list(ctx) if isinstance(ctx, list) else [ctx] * len(item["choices"])


def item_continuations(item):
    """What is scored after each context: delimiter + choice, or the shared continuation (WinoGrande)."""
    if "continuation" in item:
        return [DELIMITER + item["continuation"]] * len(item["choices"])
    return [DELIMITER + c for c in item["choices"]]


def example_text(item):
    """A solved item as a few-shot example: its gold context and gold continuation."""
    g = item["gold"]
    return item_contexts(item)[g] + item_continuations(item)[g]


def fewshot_examples(task, item, k, seed):
    if k == 0:
        return []
    subject = item.get("subject")
    if subject is not None:                              # MMLU: the subject's dev questions, first k
        pool = [ex for ex in task.fewshot_pool if ex.get("subject") == subject]
    else:
        pool = task.fewshot_pool
    own = 1 if subject is None and task.fewshot_same_split else 0     # the item itself is never an example
    if len(pool) - own < k:
        raise UserError(f"--num_fewshot {k}: {task.name} has only {len(pool) - own} examples to draw from"
                        + (f" for {subject}" if subject else ""))
    if subject is not None:
        return pool[:k]
    # k + 1 drawn and the item dropped (lm-eval's way): no scan of the pool per item
    drawn = random.Random(f"{seed}:{task.name}:{item['id']}").sample(pool, k + own)
    return [ex for ex in drawn if not (own and ex["id"] == item["id"])][:k]


def prompt_prefix(task, item, k, seed, description=True):
    """The task's description (unless description=False) and k solved examples, before the item's context."""
    shots = "".join(example_text(ex) + "\n\n" for ex in fewshot_examples(task, item, k, seed))
    return (task.describe(item) if description else "") + shots


def build_requests(task, item, tokenizer, num_fewshot=0, seed=DEFAULT_SEED, chat=False):
    """The item's (context ids, continuation ids), one per choice."""
    prefix = prompt_prefix(task, item, num_fewshot, seed, description=not chat)
    pairs = list(zip(item_contexts(item), item_continuations(item)))
    if not chat:
        return [encode_pair(tokenizer, prefix + ctx, cont) for ctx, cont in pairs]
    system = task.describe(item).strip() or None
    return [(build_prompt(tokenizer, [{"role": "user", "content": prefix + ctx}], system_prompt=system),
             tokenizer.encode(cont[len(DELIMITER):])) for ctx, cont in pairs]


def first_items(items, limit):
    """The first `limit` items, of each subject when the items have subjects (lm-eval limits each subtask)."""
    if not limit:
        return list(items)
    taken, out = {}, []
    for item in items:
        key = item.get("subject")
        if taken.get(key, 0) < limit:
            taken[key] = taken.get(key, 0) + 1
            out.append(item)
    return out


def mean_stderr(values):
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1) / n)


def argmax(xs):
    """The first index of the largest value (numpy's rule, which lm-eval uses)."""
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def item_result(item, scored):
    lls = [s[0] for s in scored]
    pred = argmax(lls)
    out = {"id": item["id"], "gold": item["gold"], "logprobs": lls, "pred": pred,
           "acc": float(pred == item["gold"])}
    if "continuation" not in item:
        norm = [ll / max(len(c), 1) for ll, c in zip(lls, item["choices"])]
        out["pred_norm"] = argmax(norm)
        out["acc_norm"] = float(out["pred_norm"] == item["gold"])
    return out


def summarize(per_item, metrics):
    """{metric: {value, stderr}}: the mean over the items that have it (value None when none has)."""
    out = {}
    for m in metrics:
        vals = [r[m] for r in per_item if r.get(m) is not None]
        out[m] = {"value": sum(vals) / len(vals), "stderr": mean_stderr(vals)} if vals else \
            {"value": None, "stderr": None}
    return out


class Progress:
    """A tqdm bar counting items (an item's share per scored choice) with items/s and the time left."""

    def __init__(self, total, label, enabled=True):
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=label, unit="item", dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} "
                                       "[{elapsed}<{remaining}, {rate_fmt}]")

    def __call__(self, n_items):
        if self.bar is not None:
            self.bar.update(n_items)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def evaluate_task(loaded, task, num_fewshot=0, limit=None, seed=DEFAULT_SEED, chat=False, batch_tokens=4096,
                  progress=True):
    """Score the task's items (the first `limit`) on loaded (inference.load.Loaded) -> a result dict:
    task, split, n, num_fewshot, metrics {name: {value, stderr}}, items [{id, gold, pred, logprobs, ...}],
    seconds, items_per_s."""
    items = first_items(task.items, limit)
    tok = loaded.tokenizer
    t0 = time.perf_counter()
    requests, groups = [], []
    for item in items:                         # an item's requests share their common prefix (loglik.score)
        pairs = build_requests(task, item, tok, num_fewshot, seed, chat)
        groups.append(list(range(len(requests), len(requests) + len(pairs))))
        requests += pairs
    bar = Progress(len(items), f"{task.name} {loaded.label}", progress)
    per_request = len(items) / max(len(requests), 1)

    def advance(n_requests):
        bar(n_requests * per_request)

    try:
        scored = score(loaded.model, requests, batch_tokens=batch_tokens, pad_id=tok.pad_id or 0, progress=advance,
                       groups=groups)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    per_item, at = [], 0
    for item in items:
        k = len(item["choices"])
        per_item.append(item_result(item, scored[at:at + k]))
        at += k
    return {"task": task.name, "split": task.split, "n": len(items), "num_fewshot": num_fewshot, "seed": seed,
            "chat_template": chat, "limit": limit, "licence": task.licence, "metrics": summarize(per_item, [m for m in task.metrics if any(m in r for r in per_item)]),
            "items": per_item, "seconds": seconds, "items_per_s": len(items) / seconds if seconds > 0 else 0.0}

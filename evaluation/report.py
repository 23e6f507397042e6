"""The side-by-side table of several models, as OpenCompass's summary lays it out: one line per (task,
metric), one column per model, in out/eval/{name}.md (percent ± stderr), .csv and .json (raw numbers) and a
grouped bar chart .png (error bars: stderr). Rows are what evaluation.suite and evaluation.gen_tasks return.

    python scripts/eval_bench.py --model full_sft --model smollm2 --name sft_vs_smollm2
    python scripts/eval_bench.py --merge out/eval/a.json out/eval/bench_piqa_0shot_smollm2_135m.json --name all
    from evaluation.report import merge_reports, write_comparison
    write_comparison(rows, out_dir(), "compare")     # -> {"md": path, "csv": path, "json": path, "png": path}
"""
import csv
import io
import json
import math
import time
from pathlib import Path

from core.atomic import write_files
from core.errors import UserError
from checkpoint.layout import comparison_path
from evaluation.suite import result_rows

EXTS = ("md", "csv", "json", "png")
SETTINGS = ("split", "n", "num_fewshot", "limit")       # what a table line says of how its task was run
NEEDED = ("model", "task", "metric", "value")


def comparison_paths(out, name):
    """{"md", "csv", "json", "png"} -> out/eval/{name}.{ext}."""
    return {ext: comparison_path(out, name, ext) for ext in EXTS}


def number(x):
    """x as a float, or None for a missing value or NaN (a stderr of one item)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def models_of(rows):
    """The models in the order they first appear."""
    return list(dict.fromkeys(r["model"] for r in rows))


def setting(values):
    """A setting over the models: its value when they agree, the distinct values "/"-joined ("6/4") when
    not, None when none is set."""
    seen = [v for v in dict.fromkeys(values) if v is not None]
    return None if not seen else seen[0] if len(seen) == 1 else "/".join(map(str, seen))


def value_of(r):
    v = {"value": number(r["value"]), "stderr": number(r.get("stderr"))}
    return dict(v, note=r["note"]) if r.get("note") else v


def line_key(r):
    """What makes results one line of the table: the task, the metric, the shots and the chat template (a
    model's 0-shot and 5-shot scores are two lines; models that saw other item counts share one)."""
    return r["task"], r["metric"], r.get("num_fewshot") or 0, bool(r.get("chat_template"))


def build_table(rows):
    """[{task, metric, split, n, num_fewshot, limit, chat_template, values: {model: {value, stderr}}}], one
    per line_key in the order first seen; settings as setting() gives them."""
    lines = {}
    for r in rows:
        line = lines.setdefault(line_key(r), {"task": r["task"], "metric": r["metric"], "rows": [],
                                              "chat_template": bool(r.get("chat_template"))})
        line["rows"].append(r)
    table = []
    for line in lines.values():
        settings = {s: setting(r.get(s) for r in line["rows"]) for s in SETTINGS}
        values = {r["model"]: value_of(r) for r in line["rows"]}
        table.append({"task": line["task"], "metric": line["metric"], **settings,
                      "chat_template": line["chat_template"], "values": values})
    return table


def cell(v):
    """A markdown cell: 43.2% ± 3.5%; "not scored" for a value that could not be scored; "-" when not run."""
    if v is None:
        return "-"
    if v["value"] is None:
        return "not scored"
    return f"{v['value']:.1%}" + (f" ± {v['stderr']:.1%}" if v["stderr"] is not None else "")


def markdown_table(rows):
    """The table in markdown: task, metric, split, n, shots ("3 chat": in the chat template), limit, then one
    column per model."""
    models = models_of(rows)
    head = ["task", "metric", "split", "n", "shots", "limit", *models]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * 6 + "---:|" * len(models)]
    for t in build_table(rows):
        shots = f"{t['num_fewshot']}" + (" chat" if t["chat_template"] else "")
        first = [t["task"], t["metric"], t["split"], t["n"], shots, t["limit"] or "all"]
        out.append("| " + " | ".join("" if x is None else str(x) for x in first + [cell(t["values"].get(m)) for m in models]) + " |")
    notes = sorted({f"{r['model']} {r['task']}: {r['note']}" for r in rows if r.get("note")})
    return "\n".join(out + ([""] + notes if notes else []))


def csv_text(rows):
    """One line per (task, metric); per model its value and stderr (raw fractions; empty when missing)."""
    models = models_of(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task", "metric", *SETTINGS] + [c for m in models for c in (m, f"{m} stderr")])
    for t in build_table(rows):
        vals = [t["values"].get(m) or {} for m in models]
        w.writerow([t["task"], t["metric"], *("" if t[s] is None else t[s] for s in SETTINGS)]
                   + [("" if v.get(k) is None else repr(v[k])) for v in vals for k in ("value", "stderr")])
    return buf.getvalue()


def clean(x):
    """x with NaN floats as None, so the JSON is standard JSON."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def chart_png(rows, title):
    """A grouped bar chart: one group per (task, metric), one bar per model, error bars = stderr -> PNG bytes."""
    import matplotlib                       # matplotlib: ~1 s of start-up, only when a chart is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt         # after use("Agg"): no display needed
    models, table = models_of(rows), build_table(rows)
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + len(table) * (0.5 + 0.35 * len(models))), 4.8))
    for i, m in enumerate(models):
        at = [(g, t["values"][m]) for g, t in enumerate(table) if (t["values"].get(m) or {}).get("value") is not None]
        if at:
            xs = [g - 0.4 + width * (i + 0.5) for g, _ in at]
            ax.bar(xs, [100 * v["value"] for _, v in at], width, yerr=[100 * (v["stderr"] or 0) for _, v in at],
                   capsize=3, label=m)
    tilt = len(table) > 6                                   # many groups: one slanted line per label
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels([f"{t['task']}{' ' if tilt else chr(10)}{t['metric']}" for t in table],
                       rotation=30 if tilt else 0, ha="right" if tilt else "center", fontsize=9)
    ax.set(title=f"{title}: score per task (error bars: stderr)", ylabel="score (%)", ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    if ax.containers:                                       # no bar at all (nothing scored): no legend
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never over a bar
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_comparison(rows, out, name):
    """The table of rows as out/eval/{name}.md, .csv, .json (the rows, the table, a "created" stamp) and
    .png; returns {ext: path} of the files written."""
    if not rows:
        raise UserError("no results to put in a table")
    paths = comparison_paths(out, name)
    created = time.strftime("%Y-%m-%dT%H:%M:%S")
    png = chart_png(rows, name)
    body = {"kind": "comparison", "name": name, "created": created, "models": models_of(rows),
            "table": build_table(rows), "rows": rows}
    md = (f"# {name}\n\nvalues: percent ± stderr (standard error of the mean over items); n: items scored; "
          f"created {created}\n\n{markdown_table(rows)}\n")
    files = {"md": md, "csv": csv_text(rows), "json": json.dumps(clean(body), ensure_ascii=False, indent=1), "png": png}
    write_files(paths["md"].parent, {paths[ext].name: content for ext, content in files.items()})   # all or none
    return paths


# ---------------------------------------------------------------- merging earlier tables and reports
def label_of(info):
    """The label a model had (inference.load.Loaded.label): its adapter's file stem, else its checkpoint's."""
    return Path((info.get("adapter") or {}).get("path") or info["checkpoint"]).stem


def report_rows(rep):
    """The rows of one per-(model, task) report (out/eval/bench_*.json, gen_*.json)."""
    note = {"note": rep["note"]} if rep.get("note") else {}
    return result_rows(rep, rep.get("label") or label_of(rep["model"]), rep["model"], created=rep.get("created"),
                       **note)


def read_rows(path):
    """The rows of a table (write_comparison's .json) or a per-task report; anything else is one line."""
    what = f"{path}: not a table or report of scripts/eval_bench.py"
    try:
        rep = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{what} ({type(e).__name__}: {e}); give out/eval/*.json files it wrote") from None
    try:
        if isinstance(rep, dict) and isinstance(rep.get("rows"), list) and "table" in rep:
            rows = [dict(r, created=r.get("created") or rep.get("created")) for r in rep["rows"]]
        elif isinstance(rep, dict) and isinstance(rep.get("metrics"), dict) and isinstance(rep.get("model"), dict):
            rows = report_rows(rep)
        else:
            raise UserError(f"{what} (no \"rows\" table or \"metrics\" of one model); give out/eval/*.json files it wrote")
        for i, r in enumerate(rows, 1):
            if not all(k in r for k in NEEDED) or not (r["value"] is None or isinstance(r["value"], (int, float))):
                raise UserError(f"{what}: result {i} lacks {'/'.join(NEEDED)} or a numeric value")
    except (KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{what} ({type(e).__name__}: {e}); give out/eval/*.json files it wrote") from None
    return rows


def merge_reports(paths, say=print):
    """The rows of earlier tables and per-task reports, models in the order first seen. The same model on the
    same table line (line_key: task, metric, shots, chat template) twice keeps the newer ("created"; a tie:
    the later file) and one line says which were replaced."""
    merged, replaced = {}, []
    for path in paths:
        for r in read_rows(path):
            key = (r["model"], *line_key(r))
            old = merged.get(key)
            if old is not None:
                replaced.append(f"{r['model']} {r['task']} {r['metric']} {key[3]}-shot")
                if (old.get("created") or "") > (r.get("created") or ""):
                    continue
            merged[key] = r
    if replaced:
        shown = ", ".join(replaced[:4]) + (f" and {len(replaced) - 4} more" if len(replaced) > 4 else "")
        say(f"merge: {len(replaced)} result(s) given twice ({shown}); kept the newest of each")
    return list(merged.values())

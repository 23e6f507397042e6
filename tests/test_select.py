"""IFD data selection (selection/, scripts/select_data.py): the scores against transformers on a small random
Llama, selection, an interrupted run resuming to the same file, a 2-process torchrun run equal to one
process, and the command's outputs and errors.

    pytest tests/test_select.py
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from factories import REPO, default_tokenizer, make_checkpoint, write_chat, write_jsonl
from inference.load import load_for_inference
from selection import ifd, run
from selection.ifd import Pair, split_sample
from selection.cluster import embed, pick_per_cluster
from selection.samples import read_samples
from selection.select import choose, compare, spearman
from core.errors import UserError
from trainer.distributed import Dist

pytestmark = pytest.mark.usefixtures("one_thread")
SCRIPT = str(REPO / "scripts" / "select_data.py")


def mixed_data(tmp_path):
    """Chat samples, an Alpaca one with an input, a multi-turn one."""
    path = write_chat(tmp_path / "data.jsonl", n=10)
    rows = [json.loads(s) for s in path.read_text().splitlines()]
    rows.append({"instruction": "Name a string instrument", "input": "in an orchestra", "output": "the cello"})
    rows.append({"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                   {"role": "user", "content": "a song?"},
                                   {"role": "assistant", "content": "a melody with a chord"}]})
    return write_jsonl(path, rows)


def hf_reference(loaded, pair):
    """transformers' LlamaForCausalLM on the same weights, one sample at a time, two forwards."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from interop.hf import hf_config_dict
    hf = LlamaForCausalLM(LlamaConfig(**hf_config_dict(loaded.model.config)))
    hf.load_state_dict(loaded.model.state_dict(), strict=True)
    hf.eval()

    def loss(context, answer):
        ids = torch.tensor([context + answer])
        labels = ids.clone()
        labels[0, :len(context)] = -100
        with torch.no_grad():
            return hf(ids, labels=labels).loss.item()
    return loss(pair.question, pair.answer), loss(pair.alone, pair.alone_answer)


@pytest.mark.parametrize("prompt", ["chatml", "alpaca", "plain"])
def test_scores_equal_a_transformers_computation(tmp_path, prompt):
    ckpt = make_checkpoint(tmp_path / "m.pth", std=0.08)
    loaded = load_for_inference(ckpt=ckpt)
    samples = read_samples(mixed_data(tmp_path))
    window, batch = (160, 400) if prompt == "alpaca" else (64, 150)      # room for Cherry's long prompt
    pairs = [Pair(s, loaded.tokenizer, prompt, window) for s in samples]
    batches = ifd.make_batches(pairs, batch)
    got = {r["line"]: r for b in batches for r in ifd.score_batch(loaded.model, b, 0)}
    assert len(got) == len(samples) and len(batches) > 1 and max(map(len, batches)) > 1   # several, padded
    assert sum(p.scored for p in pairs) > len(pairs) // 2
    for pair in pairs:
        row = got[pair.line]
        if not pair.scored:
            assert row["ifd"] is None
            continue
        cond, alone = hf_reference(loaded, pair)
        assert row["loss_cond"] == pytest.approx(cond, rel=1e-4)
        assert row["loss_alone"] == pytest.approx(alone, rel=1e-4)
        assert row["ifd"] == pytest.approx(cond / alone, rel=1e-4)
        assert row["ifd_ppl"] == pytest.approx(torch.tensor(cond - alone).exp().item(), rel=1e-4)


def test_what_each_prompt_scores(tmp_path):
    tok = default_tokenizer()
    samples = read_samples(mixed_data(tmp_path))
    alpaca, multi = samples[-2], samples[-1]
    pair = Pair(alpaca, tok, "alpaca", 512)           # Cherry's: the prompt and the answer as one text
    assert tok.decode(pair.question).endswith("### Instruction:\nName a string instrument\n\n### Input:\n"
                                              "in an orchestra\n\n### Response:")
    assert pair.question + pair.answer == tok.encode(tok.decode(pair.question) + "the cello")
    assert tok.decode(pair.alone) == "### Response:" and tok.decode(pair.alone_answer) == "the cello"
    assert pair.instruction == pair.question and not pair.truncated
    q, alone, a = split_sample(multi, tok, "plain")
    assert "user: hi\nassistant: hello\na song?" in tok.decode(q) and tok.decode(a) == "a melody with a chord"
    q, alone, a = split_sample(multi, tok, "chatml")
    assert tok.decode(a).startswith("a melody with a chord") and "hello" in tok.decode(q)
    assert "a song?" not in tok.decode(alone) and len(alone) < len(q)
    plain_q = split_sample(alpaca, tok, "plain")[0]
    long = Pair(alpaca, tok, "plain", 24)                  # the question is cut, its first token kept
    assert long.truncated and long.question[0] == plain_q[0] and len(long.question) + len(long.answer) <= 24
    short = Pair(alpaca, tok, "alpaca", len(pair.question) + 6)    # Cherry's: no room left alone, no score
    assert short.truncated and not short.scored and short.instruction == pair.question


def rows_of(values):
    return [{"line": i + 1, "ifd": v, "ifd_ppl": v, "answer_tokens": 5 + i, "truncated": False} for i, v in
            enumerate(values)]


def test_selection_drops_ifd_of_one_and_above_and_keeps_the_top():
    rows = rows_of([0.5, 0.9, 1.2, 0.7, 1.0, 0.95, None, 0.3, 0.8, 0.6])
    kept, stats = choose(rows, count=3)
    assert kept == [2, 6, 9]                                # 0.9, 0.95, 0.8 in file order; 1.2 and 1.0 dropped
    assert stats["ifd_at_least_1_dropped"] == 2 and stats["without_score"] == 1 and stats["eligible"] == 7
    assert choose(rows, count=2, keep_above_one=True)[0] == [3, 5]
    assert choose(rows, ratio=0.3)[0] == [2, 6]             # 30% of the 7 eligible
    assert choose(rows, count=10, min_answer_tokens=12)[0] == [8, 9, 10]


def test_bottom_and_random_picks_the_baselines():
    rows = rows_of([0.5, 0.9, 1.2, 0.7, 1.0, 0.95, None, 0.3, 0.8, 0.6])
    kept, stats = choose(rows, count=3, pick="bottom")
    assert kept == [1, 8, 10] and stats["cut"] == 0.6 and stats["pick"] == "bottom"   # 0.3, 0.5, 0.6
    assert choose(rows, count=2, pick="bottom", min_answer_tokens=12)[0] == [8, 10]
    drawn, stats = choose(rows, count=4, pick="random", seed=3)
    assert len(drawn) == 4 and stats["cut"] is None and not {3, 5, 7} & set(drawn)  # filters hold
    assert choose(rows, count=4, pick="random", seed=3)[0] == drawn              # the seed decides
    draws = {tuple(choose(rows, count=4, pick="random", seed=s)[0]) for s in range(20)}
    assert len(draws) > 5                                                          # not always the same lines
    every = {n for s in range(40) for n in choose(rows, count=3, pick="random", keep_above_one=True, seed=s)[0]}
    assert every == {1, 2, 3, 4, 5, 6, 8, 9, 10}             # --keep_above_one draws from all that have a score
    with pytest.raises(ValueError):
        choose(rows, count=2, pick="middle")


def test_select_writes_the_input_format_stats_and_histogram(tmp_path):
    data = tmp_path / "alpaca_data.json"
    items = [{"instruction": f"q{i}", "input": "", "output": f"answer {i}"} for i in range(6)]
    data.write_text(json.dumps(items, indent=2))
    scores = tmp_path / "s.jsonl"
    write_jsonl(scores, rows_of([0.5, 0.9, 1.1, 0.7, 0.2, 0.8]))
    out = tmp_path / "sel" / "top.json"
    done = subprocess.run([sys.executable, SCRIPT, "select", "--data_path", str(data), "--scores", str(scores),
                           "--count", "2", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == [items[1], items[5]]
    stats = json.loads((tmp_path / "sel" / "top.json.stats.json").read_text())
    assert stats["selected"] == 2 and stats["cut"] == 0.8
    assert (tmp_path / "sel" / "top.json.hist.png").read_bytes()[:4] == b"\x89PNG"
    low = tmp_path / "sel" / "low.json"
    done = subprocess.run([sys.executable, SCRIPT, "select", "--data_path", str(data), "--scores", str(scores),
                           "--count", "2", "--pick", "bottom", "-o", str(low)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(low.read_text()) == [items[0], items[4]]          # ifd 0.5 and 0.2
    write_jsonl(scores, rows_of([0.5, 0.9]))
    bad = subprocess.run([sys.executable, SCRIPT, "select", "--data_path", str(data), "--scores", str(scores),
                          "--count", "2", "-o", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and "scores 2 lines for the 6 samples" in bad.stderr
    assert not (tmp_path / "x.json").exists()


def interrupted_run(tmp_path, monkeypatch, after_batches):
    """A scoring run stopped after some batches -> (the uninterrupted run's file, the stopped run's scores
    path, again(prompt="chatml") that runs it again)."""
    loaded = load_for_inference(ckpt=make_checkpoint(tmp_path / "m.pth", std=0.08))
    samples = read_samples(write_chat(tmp_path / "d.jsonl", n=30))

    def score(out, prompt="chatml"):
        return run.score_file(samples, loaded, out, prompt, 64, 200, Dist(), progress=False)
    whole = score(tmp_path / "whole.jsonl")
    real, calls = ifd.score_batch, []

    def dies(*a):
        if len(calls) == after_batches:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a)
    monkeypatch.setattr(run, "score_batch", dies)
    out = tmp_path / "again.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score(out)
    monkeypatch.setattr(run, "score_batch", real)
    return whole, out, lambda prompt="chatml": score(out, prompt)


def test_an_interrupted_run_resumes_to_the_same_file(tmp_path, monkeypatch):
    whole, out, again = interrupted_run(tmp_path, monkeypatch, 3)
    part = run.part_path(out, 0, 1)
    assert len(part.read_text().splitlines()) > 0 and not out.exists()
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[:-1]) + '\n{"line": 99, "ifd"')   # a batch half written, a torn line
    again()
    assert out.read_bytes() == whole.read_bytes() and not part.exists()


def test_two_torchrun_processes_equal_one(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pth", std=0.08)
    data = write_chat(tmp_path / "d.jsonl", n=20, seed=3)
    common = ["score", "--data_path", str(data), "--ckpt", str(ckpt), "--batch_tokens", "150", "--no_progress",
              "--max_length", "64", "--device", "cpu"]
    one = subprocess.run([sys.executable, SCRIPT, *common, "-o", str(tmp_path / "one.jsonl")],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          SCRIPT, *common, "-o", str(tmp_path / "two.jsonl")], capture_output=True, text=True)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a = [json.loads(s) for s in (tmp_path / "one.jsonl").read_text().splitlines()]
    b = [json.loads(s) for s in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert [r["line"] for r in a] == [r["line"] for r in b] == list(range(1, 21))
    for x, y in zip(a, b):
        assert x["ifd"] == pytest.approx(y["ifd"], rel=1e-6) and x["answer_tokens"] == y["answer_tokens"]
    assert not list(tmp_path.glob("two.jsonl.part*"))


def test_a_bad_line_is_one_line_before_any_model(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"conversations": [{"role": "user", "content": "hi"},
                                                                 {"role": "assistant", "content": "yo"}]},
                                              "{not json"])
    done = subprocess.run([sys.executable, SCRIPT, "score", "--data_path", str(data), "--ckpt", "nope.pth",
                           "-o", str(tmp_path / "s.jsonl")], capture_output=True, text=True)
    assert done.returncode == 2 and f"{data}:2: not valid JSON" in done.stderr
    assert not (tmp_path / "s.jsonl").exists()


def test_spearman_and_top_overlap_of_two_scorers(tmp_path):
    stats = pytest.importorskip("scipy.stats")
    rng = __import__("random").Random(0)
    a = [rng.random() for _ in range(50)]
    b = [x + rng.gauss(0, 0.3) for x in a]
    b[3] = b[4]                                              # a tie
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, a) == pytest.approx(1.0) and spearman(a, [-x for x in a]) == pytest.approx(-1.0)
    res = compare(rows_of(a), rows_of(a[:40] + [None] * 10), top=0.25)
    assert res["samples"] == 40 and res["top_overlap"] == 1.0 and res["spearman"] == pytest.approx(1.0)
    write_jsonl(tmp_path / "a.jsonl", rows_of(a))
    write_jsonl(tmp_path / "b.jsonl", rows_of(b))
    done = subprocess.run([sys.executable, SCRIPT, "compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"50 samples scored by both: Spearman {spearman(a, b):.4f} (ifd)" in done.stdout


def test_clustering_returns_k_clusters_and_the_samples_nearest_their_centres(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pth", std=0.08)
    loaded = load_for_inference(ckpt=ckpt)
    samples = read_samples(write_chat(tmp_path / "d.jsonl", n=24, seed=5))
    vectors = embed(loaded, samples, "chatml", 64, batch_tokens=100)            # several padded batches
    one = embed(loaded, samples[3:4], "chatml", 64)                            # alone, unpadded
    assert vectors.shape == (24, loaded.model.config.hidden_size)
    assert abs(vectors[3] - one[0]).max() < 1e-4                               # padding changes nothing
    lines, labels = pick_per_cluster(vectors, [s.line for s in samples], k=4, per_cluster=2)
    assert sorted(set(labels)) == [0, 1, 2, 3] and len(lines) == 8
    assert sorted(labels[n - 1] for n in lines) == [0, 0, 1, 1, 2, 2, 3, 3]   # two from each cluster
    out = tmp_path / "pre.jsonl"
    done = subprocess.run([sys.executable, SCRIPT, "cluster", "--data_path", str(tmp_path / "d.jsonl"), "--ckpt",
                           str(ckpt), "--k", "4", "--per_cluster", "2", "--max_length", "64", "-o", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 8
    assert len((tmp_path / "pre.jsonl.clusters.jsonl").read_text().splitlines()) == 24


def test_a_resume_refuses_other_settings_and_survives_a_missing_newline(tmp_path, monkeypatch):
    whole, out, again = interrupted_run(tmp_path, monkeypatch, 2)
    with pytest.raises(UserError, match="an unfinished run of it used other settings: prompt 'chatml' "
                                        r"\(now 'plain'\)"):
        again("plain")
    part = run.part_path(out, 0, 1)
    part.write_text(part.read_text().rstrip("\n"))           # the last line whole, its newline lost
    again()
    assert out.read_bytes() == whole.read_bytes() and not run.settings_path(out).exists()


def test_ratio_rounding_nan_and_a_finished_run():
    rows = rows_of([0.5] * 100)
    assert len(choose(rows, ratio=0.29)[0]) == 29 and len(choose(rows, ratio=0.57)[0]) == 57
    rows[0]["ifd"] = float("nan")
    assert choose(rows, count=200)[1]["without_score"] == 1


def test_scoring_into_a_finished_file_is_one_line(tmp_path):
    data = write_chat(tmp_path / "d.jsonl", n=3)
    done = tmp_path / "s.jsonl"
    done.write_text("{}\n")
    res = subprocess.run([sys.executable, SCRIPT, "score", "--data_path", str(data), "--ckpt", "x.pth", "-o",
                          str(done)], capture_output=True, text=True)
    assert res.returncode == 2 and "already scored (a finished run)" in res.stderr


def test_cherry_runs_the_three_steps(tmp_path):
    ckpt = make_checkpoint(tmp_path / "out" / "full_sft_64.pth", std=0.08)
    data = write_chat(tmp_path / "d.jsonl", n=24, seed=2)
    out = tmp_path / "sel" / "top.jsonl"
    done = subprocess.run([sys.executable, SCRIPT, "cherry", "--data_path", str(data), "--ckpt", str(ckpt),
                           "--k", "3", "--per_cluster", "2", "--count", "5", "--max_length", "64", "--batch_size",
                           "2", "--device", "cpu", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len((tmp_path / "sel" / "top.jsonl.pre.jsonl").read_text().splitlines()) == 6      # 3 clusters x 2
    trained = tmp_path / "sel" / "top.jsonl.cherry" / "full_sft_64.pth"
    assert trained.is_file()
    scores = [json.loads(s) for s in (tmp_path / "sel" / "top.jsonl.scores.jsonl").read_text().splitlines()]
    assert len(scores) == 24 and len(out.read_text().splitlines()) == 5
    # the scores are the briefly trained model's, not the untrained scorer's
    first = Pair(read_samples(data)[0], default_tokenizer(), "chatml", 64)
    row = ifd.score_batch(load_for_inference(ckpt=trained).model, [first], 0)[0]
    assert scores[0]["ifd"] == pytest.approx(row["ifd"], rel=1e-5)
    untrained = ifd.score_batch(load_for_inference(ckpt=ckpt).model, [first], 0)[0]
    assert scores[0]["ifd"] != pytest.approx(untrained["ifd"], rel=1e-5)

"""Tests for scripts/prepare_data.py and scripts/convert_data.py: each subcommand, bad input, atomic writes, flat memory.

    python -m pytest tests/test_prepare_data.py -q
"""
import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter

import pytest

from factories import REPO, write_jsonl
from core.errors import UserError
from scripts import convert_data, prepare_data


def chat(i, answer=None):
    return {"conversations": [{"role": "user", "content": f"question {i}"},
                              {"role": "assistant", "content": answer or f"answer {i}"}]}


def read_jsonl(path):
    return [json.loads(l) for l in open(path, encoding="utf-8")]


def key(rec):
    return rec["conversations"][0]["content"]


def test_validate_ok_and_bad(tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", [chat(i) for i in range(3)])
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "hello"}])
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"conversations": [{"role": "user", "content": "hi"}],
                                                        "expect": {"name": "X"}}])
    prepare_data.main(["validate", str(good), str(text), str(prompts)])
    out = capsys.readouterr().out
    assert "3 records (chat)" in out and "(text)" in out and "(prompt)" in out

    bad = write_jsonl(tmp_path / "bad.jsonl", [chat(0), "{broken", {"conversations": [{"role": "user", "content": "x"}]},
                                               chat(3), {"text": "pretraining line in a chat file"}])
    with pytest.raises(UserError, match="3 problems in 1 of 2 files"):
        prepare_data.main(["validate", str(good), str(bad)])
    err = capsys.readouterr().err
    assert "bad.jsonl:2: malformed JSON" in err
    assert "bad.jsonl:3: the conversation does not end with an assistant reply" in err
    assert "bad.jsonl:5: " in err


def run_tool(*argv, timeout=60):
    return subprocess.run([sys.executable, "scripts/prepare_data.py", *map(str, argv)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("target", ["nope.jsonl", "."])
def test_validate_missing_file_or_folder_is_one_line(tmp_path, target):
    r = run_tool("validate", tmp_path / target)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert ("no such file" if target != "." else "is a directory") in lines[0]


def test_empty_file_and_non_utf8(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(chat(0)).encode() + b"\n" + '{"text": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(UserError):
        prepare_data.main(["validate", str(empty), str(latin)])
    err = capsys.readouterr().err
    assert "empty.jsonl: file is empty" in err
    assert "latin.jsonl:2: bytes that are not UTF-8" in err


def test_mix_repeats_fractions_and_seed(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [chat(f"a{i}") for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"messages": chat(f"b{i}")["conversations"]} for i in range(20)])
    out1, out2 = tmp_path / "m1.jsonl", tmp_path / "m2.jsonl"
    prepare_data.main(["mix", f"{a}:3", f"{b}:0.5", "-o", str(out1), "--seed", "1"])
    prepare_data.main(["mix", f"{a}:3", f"{b}:0.5", "-o", str(out2), "--seed", "1"])
    assert out1.read_bytes() == out2.read_bytes()
    recs = read_jsonl(out1)
    counts = Counter(key(r) for r in recs)
    assert len(recs) == 30 + 10
    assert all(counts[f"question a{i}"] == 3 for i in range(10))
    assert sum(1 for k in counts if k.startswith("question b")) == 10  # half of b, each once
    assert all("conversations" in r for r in recs)  # OpenAI input written in canonical form
    assert [key(r) for r in recs] != sorted(key(r) for r in recs)  # shuffled
    prepare_data.main(["mix", f"{a}:3", f"{b}:0.5", "-o", str(out2), "--seed", "2"])
    assert out1.read_bytes() != out2.read_bytes()


def test_mix_bad_input_writes_nothing(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [chat(0), "{broken"])
    out = tmp_path / "out.jsonl"
    with pytest.raises(UserError, match="a.jsonl:2: malformed JSON"):
        prepare_data.main(["mix", f"{a}:2", "-o", str(out)])
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.jsonl"]  # no temp files left behind
    prepare_data.main(["mix", f"{a}:2", "-o", str(out), "--skip_bad"])
    assert len(read_jsonl(out)) == 2


@pytest.mark.parametrize("weight", ["0", "-1", "nan", "inf", "1e12", "1001", "x", "2y"])
def test_mix_bad_weight_is_one_line_naming_the_spec(tmp_path, weight):
    a = write_jsonl(tmp_path / "a.jsonl", [chat(0)])
    with pytest.raises(UserError, match=r"a\.jsonl:.*a weight is a positive finite number") as e:
        prepare_data.main(["mix", f"{a}:{weight}", "-o", str(tmp_path / "o.jsonl")])
    assert f"a.jsonl:{weight}: " in str(e.value) and "no such file" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"]


def test_mix_good_weights_and_colon_in_a_file_name(tmp_path):
    a = write_jsonl(tmp_path / "a:b.jsonl", [chat(0)])
    for spec, n in ((a, 1), (f"{a}:2.5", 2), (f"{a}:3x", 3), (f"{a}:1000", 1000)):
        prepare_data.main(["mix", str(spec), "-o", str(tmp_path / "o.jsonl")])
        assert len(read_jsonl(tmp_path / "o.jsonl")) == n


def test_failed_mix_leaves_no_new_folder(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [chat(0), "{broken"])
    for spec in (tmp_path / "missing.jsonl", a):
        with pytest.raises(UserError):
            prepare_data.main(["mix", str(spec), "-o", str(tmp_path / "out" / "data" / "m.jsonl")])
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["split", "{d}", "--train_out", "{t}/a.jsonl", "--val_out", "{t}/a.jsonl"], "are the same file"),
    (["split", "{d}", "--train_out", "{d}"], "is also an input"),
    (["split", "{d}", "--val_out", "{t}/d_train.jsonl"], "are the same file"),
    (["mix", "{d}:2", "-o", "{d}"], "is also an input"),
    (["mix", "{d}", "-o", "{t}"], "is a directory"),
    (["shuffle", "{d}", "-o", "{t}/d.jsonl/x.jsonl"], "cannot write there"),
])
def test_bad_outputs_are_one_line_and_write_nothing(tmp_path, argv, message):
    src = write_jsonl(tmp_path / "d.jsonl", [chat(i) for i in range(5)])
    before = src.read_bytes()
    r = run_tool(*[a.format(d=src, t=tmp_path) for a in argv], timeout=30)   # a same-path split once hung
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"] and src.read_bytes() == before


def test_dedupe_and_shuffle_rewrite_in_place(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [chat(1), chat(1), chat(2)])
    prepare_data.main(["dedupe", str(src), "-o", str(src)])
    prepare_data.main(["shuffle", str(src)])
    assert sorted(map(key, read_jsonl(src))) == ["question 1", "question 2"]


@pytest.mark.parametrize("argv", [
    ["stats", "{d}", "--max_seq_len", "0"], ["stats", "{d}", "--limit", "-1"],
    ["validate", "{d}", "--max_errors", "-1"], ["split", "{d}", "--val_ratio", "0"],
    ["split", "{d}", "--val_ratio", "1"], ["split", "{d}", "--val_ratio", "nan"],
    ["shuffle", "{d}", "--seed", "-1"], ["shuffle", "{d}", "--seed", str(2**32)],
    ["shuffle", "{d}", "--bucket_bytes", "0"],
])
def test_numeric_flags_out_of_range_are_one_line(tmp_path, argv):
    src = write_jsonl(tmp_path / "d.jsonl", [chat(i) for i in range(5)])
    flag = argv[2]
    with pytest.raises(UserError, match=flag):
        prepare_data.main([a.format(d=src) for a in argv])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def test_split_exact_disjoint_seeded(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [chat(i) for i in range(100)])
    prepare_data.main(["split", str(src), "--val_ratio", "0.1", "--seed", "3"])
    train, val = read_jsonl(tmp_path / "d_train.jsonl"), read_jsonl(tmp_path / "d_val.jsonl")
    assert len(train) == 90 and len(val) == 10
    assert sorted(map(key, train + val)) == sorted(map(key, read_jsonl(src)))
    first = (tmp_path / "d_val.jsonl").read_bytes()
    prepare_data.main(["split", str(src), "--val_ratio", "0.1", "--seed", "3"])
    assert (tmp_path / "d_val.jsonl").read_bytes() == first
    with pytest.raises(UserError, match="val_ratio"):
        prepare_data.main(["split", str(src), "--val_ratio", "1.5"])


@pytest.mark.parametrize("seed", range(4))
def test_split_of_a_mix_keeps_copies_on_one_side(tmp_path, seed):
    a = write_jsonl(tmp_path / "a.jsonl", [chat(i) for i in range(30)])
    b = write_jsonl(tmp_path / "b.jsonl", [chat(100 + i) for i in range(10)])
    mix = tmp_path / "mix.jsonl"
    prepare_data.main(["mix", f"{a}:3", f"{b}:1.5", "-o", str(mix)])
    sides = {}
    for bucket in ("100000000", "200"):       # in memory, and through bucket files on disk
        prepare_data.main(["split", str(mix), "--val_ratio", "0.1", "--seed", str(seed), "--bucket_bytes", bucket])
        sides[bucket] = [(tmp_path / f"mix_{s}.jsonl").read_bytes() for s in ("train", "val")]
        train, val = read_jsonl(tmp_path / "mix_train.jsonl"), read_jsonl(tmp_path / "mix_val.jsonl")
        assert not set(map(key, train)) & set(map(key, val))
        assert sorted(map(key, train + val)) == sorted(map(key, read_jsonl(mix)))
        assert len(set(map(key, val))) == 4                # round(40 * 0.1) samples, each with its copies
    assert sides["100000000"] == sides["200"]


def test_dedupe_exact_and_normalized(tmp_path):
    recs = [chat(1), chat(2), chat(1), chat(3, "Answer  3"), chat(3, "answer 3"), chat(4, "ＡＢＣ"), chat(4, "abc")]
    src = write_jsonl(tmp_path / "d.jsonl", recs)
    prepare_data.main(["dedupe", str(src), "-o", str(tmp_path / "e.jsonl"), "--mode", "exact"])
    assert len(read_jsonl(tmp_path / "e.jsonl")) == 6
    prepare_data.main(["dedupe", str(src), "-o", str(tmp_path / "n.jsonl"), "--bucket_bytes", "64"])
    kept = read_jsonl(tmp_path / "n.jsonl")
    assert kept == [chat(1), chat(2), chat(3, "Answer  3"), chat(4, "ＡＢＣ")]  # first occurrence, original order


def test_shuffle_is_a_seeded_permutation(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [chat(i) for i in range(500)])
    for bucket in ("100000000", "2000"):  # in memory, and through bucket files on disk
        out = tmp_path / f"o{bucket}.jsonl"
        prepare_data.main(["shuffle", str(src), "-o", str(out), "--seed", "5", "--bucket_bytes", bucket])
        keys = [key(r) for r in read_jsonl(out)]
        assert sorted(keys) == sorted(key(r) for r in read_jsonl(src)) and keys != [key(r) for r in read_jsonl(src)]
    again = tmp_path / "again.jsonl"
    prepare_data.main(["shuffle", str(src), "-o", str(again), "--seed", "5", "--bucket_bytes", "2000"])
    assert again.read_bytes() == (tmp_path / "o2000.jsonl").read_bytes()


def peak_memory(argv):
    tracemalloc.start()
    try:
        prepare_data.main(argv)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("command", ["shuffle", "dedupe", "mix", "split"])
def test_memory_does_not_grow_with_file_size(tmp_path, command):
    """A 10x larger file must not need much more memory: the tools stream and bucket on disk."""
    peaks, sizes = [], []
    for n in (300, 3000):
        src = write_jsonl(tmp_path / f"in{n}.jsonl", [chat(i, "an answer of some length " * 55) for i in range(n)])
        sizes.append(os.path.getsize(src))
        out = str(tmp_path / "out.jsonl")
        argv = {"shuffle": ["shuffle", str(src), "-o", out],
                "dedupe": ["dedupe", str(src), "-o", out],
                "mix": ["mix", f"{src}:2", f"{src}:0.5", "-o", out],
                "split": ["split", str(src), "--train_out", out, "--val_out", out + ".val"]}[command]
        peaks.append(peak_memory(argv + ["--bucket_bytes", "65536"]))
    assert sizes[1] > 3_000_000
    assert peaks[1] < peaks[0] + 1_000_000, peaks     # 10x the data, < 1 MB more
    assert peaks[1] < sizes[1] / 3, (peaks, sizes)    # far less than holding the file in memory


def test_stats_with_a_stand_in_tokenizer(tmp_path, capsys, monkeypatch):
    class CharTokenizer:
        def encode(self, text):
            return [ord(c) for c in text]

    def encode_chat(tok, messages, add_generation_prompt=False, system_prompt=None):
        ids = [1]
        for m in messages:
            ids += tok.encode(m["content"]) + [2]
        return ids, [1] * len(ids)

    monkeypatch.setattr(prepare_data, "load_default_tokenizer", CharTokenizer)
    monkeypatch.setattr(prepare_data, "encode_chat", encode_chat)
    src = write_jsonl(tmp_path / "c.jsonl", [chat(i) for i in range(5)] + [chat(9, "x" * 600)])
    prepare_data.main(["stats", str(src), "--max_seq_len", "512"])
    out = capsys.readouterr().out
    assert "samples     6" in out and "> max_seq_len 512: 1 " in out and "histogram" in out
    txt = write_jsonl(tmp_path / "t.jsonl", [{"text": "abcd"}])
    prepare_data.main(["stats", str(txt)])
    assert "tokens      5 " in capsys.readouterr().out


def test_convert_any_format_to_canonical(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"instruction": "q1", "input": "", "output": "a1"},
        {"conversations": [{"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}], "id": 2},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q3"},
                      {"role": "assistant", "content": "a3"}]},
    ])
    out = tmp_path / "out.jsonl"
    convert_data.main([str(src), "-o", str(out)])
    recs = read_jsonl(out)
    assert [r["conversations"][-1]["content"] for r in recs] == ["a1", "a2", "a3"]
    assert recs[1]["id"] == 2 and recs[2]["conversations"][0]["role"] == "system"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "q", "output": "a"}, {"nope": 1}])
    with pytest.raises(UserError, match="bad.jsonl:2"):
        convert_data.main([str(bad), "-o", str(tmp_path / "o2.jsonl")])
    assert not (tmp_path / "o2.jsonl").exists()

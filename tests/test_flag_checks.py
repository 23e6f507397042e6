"""Flag values, output paths, the context window, resume and DDP: each mistake is one line, exit 2, and
nothing in out/ (issue 10). The trainers and eval_model.py are run through cli.run_cli as a user would.

    pytest tests/test_flag_checks.py
"""
import json
import sys
import time
from pathlib import Path

import pytest

import eval_model
from core.cli import run_cli
from factories import FAST, REPO, make_checkpoint, run_python, write_chat
from checkpoint.pth import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def one_line(main, argv, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def stage_main(stage):
    import trainer.train_full_sft as ts
    import trainer.train_lora as tl
    import trainer.train_pretrain as tp
    return {"pretrain": tp.main, "full_sft": ts.main, "lora": tl.main}[stage]


def files_in(folder):
    return [p for p in Path(folder).rglob("*") if p.is_file()] if Path(folder).exists() else []


@pytest.fixture
def setup(tmp_path):
    base = make_checkpoint(tmp_path / "bases" / "full_sft_64.pth")
    return base, write_chat(tmp_path / "chat.jsonl", n=12), tmp_path / "out"


TRAIN_FLAGS = [
    ("lora", ["--learning_rate", "0"], "--learning_rate must be a number in (0.0, 1000.0]"),
    ("lora", ["--learning_rate=-1e-3"], "--learning_rate must be"),
    ("lora", ["--learning_rate", "nan"], "--learning_rate must be"),
    ("full_sft", ["--grad_clip", "inf"], "--grad_clip must be"),
    ("full_sft", ["--num_workers=-1"], "--num_workers must be a number in [0, 256]"),
    ("full_sft", ["--eval_batches=-2"], "--eval_batches must be"),
    ("full_sft", ["--hidden_size=-64"], "--hidden_size must be"),
    ("full_sft", ["--ddp_timeout", "0"], "--ddp_timeout must be"),
    ("lora", ["--lora_rank", "4096"], "--lora_rank 4096: LoRA rank 4096 is above the width"),
    ("lora", ["--lora_name", "../escape"], "--lora_name '../escape'"),
    ("lora", ["--lora_name", "a/b"], "--lora_name 'a/b'"),
    ("lora", ["--device", "tpu"], "--device 'tpu': not a device name"),
    ("lora", ["--device", "mps"], "--device mps: only cpu and cuda"),
    ("full_sft", ["--num_hidden_layers", "3"], "--num_hidden_layers 3, but"),
    ("full_sft", ["--seed", "99999999999999999999"], "--seed must be a number in [0, 4294967295]"),
    ("full_sft", ["--batch_size", "100000000000"], "--batch_size must be"),
    ("lora", ["--lora_name", "a" * 300], "file name too long"),
    ("full_sft", ["--max_seq_len", "8", "--system_prompt", "a " * 50], "no conversation keeps a token"),
    ("full_sft", ["--max_seq_len", "100000"], "--max_seq_len 100000 is above the window"),
]


@pytest.mark.parametrize("stage,flags,msg", TRAIN_FLAGS, ids=[" ".join(f) for _, f, _ in TRAIN_FLAGS])
def test_trainer_flags(setup, capsys, stage, flags, msg):
    base, data, out = setup
    argv = ["--base", str(base), "--data_path", str(data), "--out_dir", str(out), *FAST, *flags]
    err = one_line(stage_main(stage), argv, capsys)
    assert msg in err, err
    assert files_in(out) == []


def test_unavailable_cuda_device(setup, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    base, data, out = setup
    err = one_line(stage_main("lora"), ["--base", str(base), "--data_path", str(data), "--out_dir", str(out),
                                        *FAST, "--device", "cuda"], capsys)
    assert "no such CUDA device" in err


@pytest.mark.parametrize("flags,msg", [
    (["--hidden_size", "100"], "head_dim 25"),                 # tiny preset: 4 heads of 25
    (["--hidden_size", "16384", "--num_hidden_layers", "512"], "GiB to train, this machine has"),
    (["--tokenizer", "README.txt"], "not a sentencepiece tokenizer model"),
    (["--max_seq_len", "40000"], "--max_seq_len 40000 is above the window of the tiny preset"),
])
def test_pretrain_flags(tmp_path, capsys, flags, msg):
    data = tmp_path / "text.jsonl"
    data.write_text(json.dumps({"text": "some words " * 40}) + "\n")
    out = tmp_path / "out"
    err = one_line(stage_main("pretrain"), ["--preset", "tiny", "--data_path", str(data), "--out_dir", str(out),
                                            "--device", "cpu", *flags], capsys)
    assert msg in err and files_in(out) == []


def test_output_path_that_is_a_folder_or_under_a_file(setup, capsys):
    base, data, out = setup
    (out / "lora" / "lora_music_64.pth").mkdir(parents=True)
    err = one_line(stage_main("lora"), ["--base", str(base), "--data_path", str(data), "--out_dir", str(out),
                                        *FAST], capsys)
    assert "lora_music_64.pth: is a directory" in err
    assert files_in(out) == []
    blocker = out.parent / "a_file"
    blocker.write_text("x")
    err = one_line(stage_main("full_sft"), ["--base", str(base), "--data_path", str(data), "--out_dir",
                                            str(blocker / "out"), *FAST], capsys)
    assert "cannot write there" in err


def test_minimind_shape_flags_pick_and_check_the_base(tmp_path):
    """After a pretrain of a given shape, the fine-tuning stages take the same --hidden_size and
    --num_hidden_layers (MiniMind's habit) and refuse another depth in one line."""
    out = tmp_path / "out"
    data = write_chat(tmp_path / "chat.jsonl", n=12)
    make_checkpoint(out / "pretrain_64.pth", stage="pretrain")
    make_checkpoint(out / "pretrain_128.pth", stage="pretrain", hidden=128)
    common = ["--data_path", str(data), "--out_dir", str(out), *FAST, "--max_steps", "1", "--val_ratio", "0"]
    run_python(["trainer/train_full_sft.py", "--hidden_size", "64", "--num_hidden_layers", "2", *common], REPO)
    assert load_checkpoint(out / "full_sft_64.pth")["meta"]["parent"] == str((out / "pretrain_64.pth").resolve())
    r = run_python(["trainer/train_lora.py", "--hidden_size", "64", "--num_hidden_layers", "4", *common], REPO,
                   check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--num_hidden_layers 4, but" in r.stderr and "num_hidden_layers 2" in r.stderr


@pytest.mark.parametrize("change,msg", [
    (["--lora_rank", "4"], "the LoRA settings changed"),
    (["--max_seq_len", "32"], "the settings that shape the data changed"),
    (["--data_path", "OTHER"], "this state was trained on"),
])
def test_resume_refuses_another_run(setup, capsys, change, msg):
    base, data, out = setup
    argv = ["--base", str(base), "--data_path", str(data), "--out_dir", str(out), *FAST, "--max_steps", "4",
            "--save_interval", "2", "--lora_rank", "8"]
    run_cli(stage_main("lora"), argv)
    other = write_chat(data.parent / "other.jsonl", n=12, seed=5)
    change = [str(other) if c == "OTHER" else c for c in change]
    capsys.readouterr()
    err = one_line(stage_main("lora"), argv + ["--resume"] + change, capsys)
    assert msg in err and "drop --resume" in err, err


def test_resume_refuses_another_model_shape(tmp_path, capsys):
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": f"words {i} " * 30}) + "\n" for i in range(8)))
    out = tmp_path / "out"
    argv = ["--preset", "tiny", "--data_path", str(data), "--out_dir", str(out), *FAST, "--max_steps", "3",
            "--save_interval", "2", "--val_ratio", "0"]
    run_cli(stage_main("pretrain"), argv)
    capsys.readouterr()
    err = one_line(stage_main("pretrain"), argv + ["--resume", "--num_hidden_layers", "3"], capsys)
    assert "the model config changed" in err and "num_hidden_layers 2 -> 3" in err


EVAL_FLAGS = [
    (["--max_new_tokens", "0"], "--max_new_tokens must be an integer at least 1"),
    (["--top_p", "0"], "--top_p must be a number in (0.0, 1.0]"),
    (["--top_k=-1"], "--top_k must be"),
    (["--temperature", "nan"], "--temperature must be"),
    (["--repetition_penalty", "0"], "--repetition_penalty must be"),
    (["--batch_size", "0"], "--batch_size must be"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--seed", "99999999999999999999"], "--seed must be"),
    (["--identity_test", "--report", "FOLDER"], "is a directory"),
    (["--identity_test", "--report", "/proc/report.json"], "cannot write there"),
]


@pytest.mark.parametrize("flags,msg", EVAL_FLAGS, ids=[" ".join(f) for f, _ in EVAL_FLAGS])
def test_eval_flags(tmp_path, capsys, flags, msg):
    out = tmp_path / "out"
    make_checkpoint(out / "full_sft_64.pth")
    (tmp_path / "folder").mkdir()
    flags = [str(tmp_path / "folder") if f == "FOLDER" else f for f in flags]
    err = one_line(eval_model.main, ["--out_dir", str(out), "--prompt", "hi", *flags], capsys)
    assert msg in err, err
    assert sorted(p.name for p in files_in(out)) == ["full_sft_64.pth"]


def test_eval_caps_an_overlong_prompt_and_reply_to_the_window(tmp_path, capsys):
    out = tmp_path / "out"
    make_checkpoint(out / "full_sft_64.pth", max_position_embeddings=48)
    run_cli(eval_model.main, ["--out_dir", str(out), "--prompt", "word " * 200, "--max_new_tokens", "200",
                              "--temperature", "0", "--system", "You are TinyMind."])
    err = capsys.readouterr().err
    assert "warning: prompt of" in err and "cut to 24 from the left" in err, err
    assert "warning: max_new_tokens 200 capped to 24" in err, err


def test_build_prompt_keeps_the_system_prompt(tokenizer):
    from inference.prompt import build_prompt
    from tokenizer.tokenizer import encode_chat
    system = "You are TinyMind."
    msgs = [{"role": "user", "content": "tell me " * 100}]
    head = encode_chat(tokenizer, [], system_prompt=system)[0]
    full = build_prompt(tokenizer, msgs, system)
    with pytest.warns(UserWarning, match="cut to"):
        cut = build_prompt(tokenizer, msgs, system, window=128, max_new_tokens=32)
    assert len(cut) == 96 and cut[:len(head)] == head and cut[len(head):] == full[len(full) - 96 + len(head):]


def test_eval_prompt_that_is_not_utf8_and_prompts_file_in_a_script(tmp_path):
    out = tmp_path / "out"
    make_checkpoint(out / "full_sft_64.pth")
    import subprocess
    cmd = [sys.executable.encode(), b"eval_model.py", b"--out_dir", str(out).encode(), b"--max_new_tokens", b"2"]
    r = subprocess.run(cmd + [b"--prompt", b"caf\xe9 \xff"], capture_output=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and "> caf\ufffd \ufffd".encode() in r.stdout, r.stderr
    prompts = tmp_path / "p.txt"
    prompts.write_text("first question\nsecond question\n")
    r = subprocess.run(cmd + [b"--prompts_file", str(prompts).encode()], stdin=subprocess.DEVNULL,
                       capture_output=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and b"> first question" in r.stdout and b"> second question" in r.stdout


def test_missing_moe_base_hint_keeps_use_moe(tmp_path, capsys):
    err = one_line(stage_main("lora"), ["--out_dir", str(tmp_path / "out"), "--use_moe", "--device", "cpu"], capsys)
    assert "full_sft_512_moe.pth" in err and "train_full_sft.py --use_moe`" in err


def test_eval_stdin_closed_or_binary(tmp_path):
    out = tmp_path / "out"
    make_checkpoint(out / "full_sft_64.pth")
    cmd = [sys.executable, "eval_model.py", "--out_dir", str(out), "--max_new_tokens", "2"]
    import subprocess
    r = subprocess.run(cmd, input=b"caf\xe9 \xff\xfe\n", capture_output=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and b"> caf" in r.stdout, r.stderr
    r = subprocess.run(" ".join(cmd) + " <&-", shell=True, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: no standard input"), r.stderr


def test_stuck_ddp_rank_ends_the_job_with_one_line(tmp_path):
    """Rank 1 freezes before its second step; rank 0 gives up after --ddp_timeout seconds."""
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=16)
    spy = tmp_path / "spy.py"
    spy.write_text(f"""
import os, sys, time
sys.path.insert(0, {str(REPO)!r})
import trainer.step as step
orig, calls = step.accumulate_gradients, []
def frozen(*a, **k):
    calls.append(1)
    if os.environ.get("RANK") == "1" and len(calls) == 2:
        time.sleep(120)
    return orig(*a, **k)
step.accumulate_gradients = frozen
import trainer.train_full_sft as ts
from core.cli import run_cli
run_cli(ts.main, sys.argv[1:])
""")
    t = time.monotonic()
    r = run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(spy),
                    "--base", str(base), "--data_path", str(data), "--val_ratio", "0", "--max_steps", "4", *FAST,
                    "--batch_size", "2", "--ddp_timeout", "4", "--out_dir", str(tmp_path / "out")], REPO,
                   check=False)
    assert r.returncode != 0 and time.monotonic() - t < 90
    assert "did not answer within --ddp_timeout 4 s" in r.stderr, r.stderr[-2000:]

"""The three training stages from the command line, plus the loop's behaviour (loss normalisation, LoRA-only
updates, non-finite loss, wandb offline, plots). CPU, tiny model, a few steps.

    pytest tests/test_train_stages.py
"""
import json
import shutil

import pytest
import torch

from factories import (FAST, REPO, default_tokenizer, make_checkpoint, make_model, run_python, words, write_chat,
                       write_text)
from checkpoint.pth import file_sha256, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def test_three_stages_from_repo_root_and_trainer_dir(tmp_path):
    """The README commands, exactly, in a copy of the repository laid out like the real one:
    ../dataset/... resolves against trainer/ from the repo root and against the cwd from trainer/,
    and outputs go to <repo>/out by default."""
    repo = tmp_path / "repo"
    for folder in ("core", "model", "tokenizer", "checkpoint", "interop", "inference", "dataset", "trainer"):
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "*.jsonl"))
    env = {"PYTHONPATH": str(repo)}       # the copy's modules, not the editable install's (which write to REPO/out)
    write_text(repo / "dataset" / "pretrain.jsonl")
    write_chat(repo / "dataset" / "sft.jsonl", n=24)
    write_chat(repo / "dataset" / "music.jsonl", n=16, seed=1)
    out = repo / "out"

    r = run_python(["trainer/train_pretrain.py", "--preset", "tiny", "--max_steps", "4", *FAST], cwd=repo, env=env)
    assert r.stdout.strip().splitlines()[-1] == f"saved {out / 'pretrain_64.pth'}"
    assert "train config (what differs from the defaults" in r.stdout and "  preset: 'tiny'" in r.stdout
    assert "  lora_rank:" not in r.stdout                   # a default is not printed (it is in the log)
    assert "step 4/4 | loss " in r.stdout and " tok/s | eta " in r.stdout
    r = run_python(["train_full_sft.py", "--max_steps", "3", *FAST], cwd=repo / "trainer", env=env)  # finds pretrain_64
    assert r.stdout.strip().splitlines()[-1] == f"saved {out / 'full_sft_64.pth'}"
    r = run_python(["trainer/train_lora.py", "--lora_name", "lora_music", "--data_path",
                    "../dataset/music.jsonl", "--epochs", "1", *FAST], cwd=repo, env=env)
    adapter_path = out / "lora" / "lora_music_64.pth"
    assert r.stdout.strip().splitlines()[-1] == f"saved {adapter_path}"
    assert "trainable" in r.stdout
    r = run_python(["train_lora.py", "--lora_name", "lora_b", "--data_path", "../dataset/music.jsonl",
                    "--epochs", "1", *FAST], cwd=repo / "trainer", env=env)
    assert (out / "lora" / "lora_b_64.pth").exists()

    pre, sft = load_checkpoint(out / "pretrain_64.pth"), load_checkpoint(out / "full_sft_64.pth")
    assert pre["meta"]["stage"] == "pretrain" and pre["meta"]["step"] == 4
    assert pre["meta"]["train_config"]["preset"] == "tiny"
    assert sft["config"] == pre["config"] and sft["meta"]["parent_sha256"] == file_sha256(out / "pretrain_64.pth")
    assert all(v.dtype == torch.float32 for v in sft["model"].values())
    adapter = torch.load(adapter_path, weights_only=True)
    assert adapter["base"]["sha256"] == file_sha256(out / "full_sft_64.pth")
    assert set(adapter["lora"]) and all(".lora_A." in k or ".lora_B." in k for k in adapter["lora"])
    assert adapter["meta"]["train_config"]["lora_name"] == "lora_music"
    assert adapter["meta"]["val_path"]                          # held-out split of music.jsonl
    for run_name in ("pretrain_64", "full_sft_64", "lora_music_64"):
        rows = [json.loads(x) for x in (out / "logs" / f"{run_name}.jsonl").read_text().splitlines()]
        assert any("loss" in x for x in rows) and any("val_loss" in x for x in rows)
        assert (out / "logs" / f"{run_name}.png").stat().st_size > 0


def test_lora_training_changes_only_lora_weights(tmp_path, monkeypatch):
    import trainer.stage as stage
    import trainer.train_lora as tl
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=16)
    seen = {}

    def spy(cfg, model, *args, **kw):
        seen["model"] = model
        return orig(cfg, model, *args, **kw)
    orig = stage.train
    monkeypatch.setattr(stage, "train", spy)
    tl.main(["--base", str(base), "--data_path", str(data), "--out_dir", str(tmp_path / "out"), "--max_steps", "3",
             "--learning_rate", "1e-2", *FAST])
    before = load_checkpoint(base)["model"]
    changed = set()
    for name, p in seen["model"].named_parameters():
        if "lora_" in name:
            changed.add(name)
            if ".lora_B." in name:
                assert p.abs().sum() > 0, name              # B starts at zero and trained
        else:
            key = name.replace(".base.", ".")
            assert torch.equal(p.detach(), before[key]), name
    assert len(changed) == 2 * 7 * 2                       # A and B on 7 targets in 2 layers


def batches_of(ds, collate, sizes):
    out, i = [], 0
    for n in sizes:
        out.append(collate([ds[j] for j in range(i, i + n)]))
        i += n
    return out


def test_accumulation_gives_the_big_batch_gradient():
    """Loss normalised by the step's target count: accumulation 2 x batch 2 == batch 4, and a step without
    targets is safe."""
    from functools import partial
    from dataset.lm_dataset import ChatDataset, collate_chat
    from trainer.distributed import Dist
    from trainer.step import accumulate_gradients
    import random
    tok = default_tokenizer()
    rng = random.Random(0)
    convs = [[{"role": "user", "content": words(rng, 1, 5)}, {"role": "assistant", "content": words(rng, 1, 30)}]
             for _ in range(4)]
    ds = ChatDataset(convs, tok, max_seq_len=64)
    collate = partial(collate_chat, pad_id=tok.pad_id)
    model = make_model(tok.vocab_size).train()
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def grads(sizes):
        model.zero_grad(set_to_none=True)
        stats, n = accumulate_gradients(model, batches_of(ds, collate, sizes), Dist(), scaler)
        return {k: p.grad.clone() for k, p in model.named_parameters()}, stats[0].item() / n

    g4, loss4 = grads([4])
    g22, loss22 = grads([2, 2])
    g13, _ = grads([1, 3])
    assert abs(loss4 - loss22) < 1e-5
    for k in g4:
        torch.testing.assert_close(g22[k], g4[k], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(g13[k], g4[k], rtol=1e-4, atol=1e-7)

    empty = collate([ds[0]])
    empty["labels"].fill_(-100)
    model.zero_grad(set_to_none=True)
    stats, n = accumulate_gradients(model, [empty], Dist(), scaler)
    assert n == 0 and torch.isfinite(stats).all()
    assert all(p.grad is None for p in model.parameters())


def test_non_finite_loss_stops_with_one_line(tmp_path, capsys):
    from core.cli import run_cli
    import trainer.train_full_sft as ts
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=40)
    out = tmp_path / "out"
    common = ["--base", str(base), "--data_path", str(data), "--out_dir", str(out), *FAST]
    run_cli(ts.main, common + ["--max_steps", "2"])                    # a good run first: its log must stay
    log = out / "logs" / "full_sft_64.jsonl"
    good = log.read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(ts.main, common + ["--max_steps", "30", "--learning_rate", "1000", "--grad_clip", "0",
                                   "--save_interval", "1000"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: loss became") and "\n" not in err
    assert "last good checkpoint is" in err and (out / "full_sft_64.pth").exists()
    assert log.read_text() == good          # nothing was saved, so the log still describes the checkpoint


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import trainer.train_full_sft as ts
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=8)
    out = tmp_path / "out"
    ts.main(["--base", str(base), "--data_path", str(data), "--out_dir", str(out), "--max_steps", "2", "--use_wandb",
             *FAST])
    assert list((out / "wandb").rglob("offline-run-*")), "no offline wandb run under out/wandb"
    assert (out / "full_sft_64.pth").exists()


def test_plot_runs_overlays_runs(tmp_path):
    logs = []
    for name, scale in (("a", 1.0), ("b", 2.0)):
        p = tmp_path / f"{name}.jsonl"
        p.write_text("".join(json.dumps({"step": s, "loss": scale / s}) + "\n" for s in range(1, 6))
                     + json.dumps({"step": 5, "val_loss": scale}) + "\n")
        logs.append(str(p))
    png = tmp_path / "runs.png"
    run_python(["scripts/plot_runs.py", *logs, "-o", str(png)], cwd=REPO)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_lists_real_boolean_flags():
    from trainer.args import build_parser
    ap = build_parser("lora")
    ns = ap.parse_args(["--use_wandb", "--no_skip_bad", "--use_rslora"])
    assert ns.use_wandb is True and ns.skip_bad is False and ns.use_rslora is True
    assert "comma list of linear-layer names" in ap.format_help()
    with pytest.raises(SystemExit):
        build_parser("pretrain").parse_args(["--lora_rank", "4"])     # LoRA flags only where they apply

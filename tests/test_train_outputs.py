"""What a training run leaves behind: a run stopped by its clock (--max_minutes) saves properly with a
decayed learning rate, a re-run never silently destroys a finished output, the identity the data teaches
is recorded in the output, which base train_lora.py picks, and bfloat16 on a CPU.

    pytest tests/test_train_outputs.py
"""
import json

import pytest
import torch

from factories import FAST, make_checkpoint, write_chat, write_jsonl
from core.errors import UserError
from trainer import train_full_sft, train_lora
from trainer.components import get_lr, schedule_step

pytestmark = pytest.mark.usefixtures("one_thread")


def lora(tmp_path, *flags, base=None, data=None):
    data = data or write_chat(tmp_path / "chat.jsonl", n=16)
    base_flags = ["--base", str(base)] if base else []
    train_lora.main([*base_flags, "--data_path", str(data), "--out_dir", str(tmp_path / "out"), *FAST, *flags])
    return tmp_path / "out" / "lora" / "lora_music_64.pth"


def log_rows(out, run):
    return [json.loads(s) for s in (out / "logs" / f"{run}.jsonl").read_text().splitlines()]


def test_time_limit_stops_saves_and_has_decayed_the_learning_rate(tmp_path, capsys):
    base = make_checkpoint(tmp_path / "base.pth")
    path = lora(tmp_path, "--max_steps", "100000", "--max_minutes", "0.02", "--log_interval", "1000", "--warmup_iters", "0",
                base=base)
    meta = torch.load(path, weights_only=True)["meta"]
    assert 0 < meta["step"] < 100000
    assert meta["stopped"].startswith("time limit of 0.02 minutes reached at step")
    rows = log_rows(tmp_path / "out", "lora_music_64")
    assert rows[-2]["stopped"] == meta["stopped"] and "val_loss" in rows[-1]
    last = [r for r in rows if "loss" in r][-1]
    assert last["step"] == meta["step"]                 # the steps since the last line got their line
    assert last["lr"] < 0.5 * 5e-4                      # the schedule followed the clock, not the step count
    assert "stopped: time limit" in capsys.readouterr().out


def test_schedule_follows_the_clock_when_it_ends_the_run_first():
    assert schedule_step(10, 1000, elapsed_s=0, limit_s=0) == 10          # no limit: the step
    assert schedule_step(10, 1000, elapsed_s=30, limit_s=60) == 500       # half the time: half the schedule
    assert schedule_step(900, 1000, elapsed_s=30, limit_s=60) == 900      # the steps run ahead of the clock
    assert schedule_step(10, 1000, elapsed_s=120, limit_s=60) == 999      # never past the last step
    assert get_lr(999, 1000, 10, 1.0) == pytest.approx(0.1)


def test_rerun_keeps_the_previous_adapter_log_and_curve(tmp_path, capsys):
    base = make_checkpoint(tmp_path / "base.pth")
    first = lora(tmp_path, "--max_steps", "2", base=base)
    old = first.read_bytes()
    old_log = (tmp_path / "out" / "logs" / "lora_music_64.jsonl").read_bytes()
    capsys.readouterr()
    second = lora(tmp_path, "--max_steps", "3", "--learning_rate", "1e-2", base=base)
    assert second == first and second.read_bytes() != old
    kept = list((tmp_path / "out" / "previous").glob("lora_music_64-*"))
    assert len(kept) == 1
    assert (kept[0] / "lora_music_64.pth").read_bytes() == old
    assert (kept[0] / "lora_music_64.jsonl").read_bytes() == old_log
    assert (kept[0] / "lora_music_64.png").is_file()
    assert f"kept the previous lora_music_64.pth, lora_music_64.jsonl, lora_music_64.png in {kept[0]}" in \
        capsys.readouterr().out


def test_a_run_that_fails_before_its_first_save_moves_nothing(tmp_path):
    base = make_checkpoint(tmp_path / "base.pth")
    first = lora(tmp_path, "--max_steps", "2", base=base)
    old = first.read_bytes()
    with pytest.raises(UserError, match="loss became"):
        lora(tmp_path, "--max_steps", "30", "--learning_rate", "1000", "--grad_clip", "0", "--save_interval",
             "1000", base=base)
    assert first.read_bytes() == old and not (tmp_path / "out" / "previous").exists()


def test_resume_continues_its_own_output_without_keeping_a_copy(tmp_path):
    base = make_checkpoint(tmp_path / "base.pth")
    lora(tmp_path, "--max_steps", "2", "--save_interval", "1", base=base)
    lora(tmp_path, "--max_steps", "4", "--save_interval", "1", "--resume", base=base)
    assert not (tmp_path / "out" / "previous").exists()


def identity_rows(n, name="Melody", creator="Ada Lab"):
    return [{"conversations": [{"role": "user", "content": f"who are you {i}"},
                               {"role": "assistant", "content": f"I am {name}, made by {creator}."}],
             "identity": {"name": name, "creator": creator}} for i in range(n)]


def test_the_identity_of_the_data_is_recorded_in_the_adapter(tmp_path, capsys):
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_jsonl(tmp_path / "mix.jsonl", identity_rows(8) + [
        {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 8)
    path = lora(tmp_path, "--max_steps", "2", base=base, data=data)
    assert torch.load(path, weights_only=True)["meta"]["identity"] == {"name": "Melody", "creator": "Ada Lab"}
    assert "identity taught: Melody, made by Ada Lab" in capsys.readouterr().out


def test_two_identities_in_one_training_set_are_one_line(tmp_path):
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_jsonl(tmp_path / "mix.jsonl", identity_rows(8) + identity_rows(8, "Aria", "Jane"))
    with pytest.raises(UserError, match=r"mix.jsonl: the data teaches 2 identities \(Aria, Melody\)"):
        lora(tmp_path, "--max_steps", "2", base=base, data=data)


def test_lora_base_is_the_full_sft_checkpoint_else_the_imported_smollm2(tmp_path, capsys):
    out = tmp_path / "out"
    make_checkpoint(out / "smollm2_135m.pth", stage="import")
    path = lora(tmp_path, "--max_steps", "1")
    assert torch.load(path, weights_only=True)["base"]["path"] == str((out / "smollm2_135m.pth").resolve())
    assert "(no full-SFT checkpoint in out/, so the imported SmolLM2; --base picks another)" in capsys.readouterr().out
    make_checkpoint(out / "full_sft_64.pth")
    lora(tmp_path, "--max_steps", "1")
    assert torch.load(path, weights_only=True)["base"]["path"] == str((out / "full_sft_64.pth").resolve())


def test_bfloat16_trains_on_a_cpu_and_float16_is_one_line(tmp_path):
    base = make_checkpoint(tmp_path / "base.pth")
    path = lora(tmp_path, "--max_steps", "2", "--dtype", "bfloat16", base=base)
    adapter = torch.load(path, weights_only=True)
    assert adapter["meta"]["train_config"]["dtype"] == "bfloat16"
    assert {t.dtype for t in adapter["lora"].values()} == {torch.float32}      # float32 weights saved
    with pytest.raises(UserError, match="--dtype float16 needs a CUDA device"):
        lora(tmp_path, "--max_steps", "2", "--dtype", "float16", base=base)


def test_full_sft_rerun_keeps_the_previous_checkpoint(tmp_path):
    base = make_checkpoint(tmp_path / "out" / "pretrain_64.pth", stage="pretrain")
    data = write_chat(tmp_path / "chat.jsonl", n=16)
    argv = ["--base", str(base), "--data_path", str(data), "--out_dir", str(tmp_path / "out"), "--max_steps", "1",
            *FAST]
    train_full_sft.main(argv)
    old = (tmp_path / "out" / "full_sft_64.pth").read_bytes()
    train_full_sft.main(argv)
    kept = list((tmp_path / "out" / "previous").glob("full_sft_64-*/full_sft_64.pth"))
    assert len(kept) == 1 and kept[0].read_bytes() == old

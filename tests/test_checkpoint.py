"""Self-describing checkpoints: round trip, names, and one-line errors for bad files."""
import subprocess
import sys

import pytest
import torch

from model.checkpoint import load_checkpoint, load_model, save_checkpoint
from model.paths import checkpoint_name
from model.errors import UserError


def test_round_trip_identical_logits(tiny_checkpoint, tiny_config, tokenizer):
    from model.model import TinyMindForCausalLM
    torch.manual_seed(0)
    original = TinyMindForCausalLM(tiny_config).eval()
    model, tok, ckpt = load_model(tiny_checkpoint)
    ids = torch.randint(0, tiny_config.vocab_size, (2, 12))
    with torch.no_grad():
        assert torch.equal(original(ids).logits, model(ids).logits)
    assert tok.sha256 == tokenizer.sha256
    assert ckpt["meta"]["stage"] == "full_sft" and "created" in ckpt["meta"]
    assert ckpt["config"]["hidden_size"] == 64
    assert not list(tiny_checkpoint.parent.glob("*.tmp*"))  # nothing half-written left behind


def test_names_follow_minimind():
    assert checkpoint_name("pretrain", 512) == "pretrain_512.pth"
    assert checkpoint_name("full_sft", 768, use_moe=True) == "full_sft_768_moe.pth"
    assert checkpoint_name("lora", 512, lora_name="lora_music") == "lora/lora_music_512.pth"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign", "missing", "directory"])
def test_bad_files_give_one_line(tmp_path, tiny_checkpoint, damage):
    bad = tmp_path / "bad.pth"
    if damage == "truncate":
        bad.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    elif damage == "garbage":
        bad.write_bytes(b"not a checkpoint at all" * 10)
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
    elif damage == "directory":
        bad.mkdir()
    with pytest.raises(UserError) as e:
        load_checkpoint(bad)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg


def test_truncated_checkpoint_cli_message(tmp_path, tiny_checkpoint):
    bad = tmp_path / "cut.pth"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:-100])
    code = ("import sys; sys.path.insert(0, %r); from cli import run_cli; "
            "from model.checkpoint import load_model; run_cli(load_model, %r)" % (str(sys.path[0]), str(bad)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "cut.pth" in r.stderr
    assert "Traceback" not in r.stderr


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    bad = tmp_path / "evil.pth"
    torch.save({"format": "tinymind-checkpoint-v1", "model": Evil()}, bad)
    with pytest.raises(UserError):
        load_checkpoint(bad)


def test_save_is_atomic_on_failure(tmp_path, tiny_config, tokenizer, monkeypatch):
    path = tmp_path / "x.pth"
    save_checkpoint(path, {"w": torch.zeros(2)}, tiny_config, tokenizer, {"stage": "test"})
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"w": torch.ones(2)}, tiny_config, tokenizer, {"stage": "test"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.pth"]

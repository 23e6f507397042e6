"""Distillation (--teacher on trainer/train_full_sft.py and train_lora.py): the loss is alpha * CE +
(1 - alpha) * T^2 * KL(teacher || student) over the answer tokens; alpha 1 trains exactly as without a
teacher; alpha 0 brings the student's distribution to the teacher's; a teacher of another tokenizer is one
line. CPU, tiny models.

    pytest tests/test_distill.py
"""
import json

import pytest
import torch
import torch.nn.functional as F

import trainer.train_full_sft as ts
import trainer.train_lora as tl
from checkpoint.pth import load_checkpoint, save_checkpoint
from factories import FAST, default_tokenizer, make_checkpoint, make_model, randomize_lora_B, run_main, write_chat
from model.lora import LoRAConfig, apply_lora, merged_state_dict
from tokenizer.hf import SentencePieceHFTokenizer
from trainer.distill import distill_terms

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_terms_equal_torchs_cross_entropy_and_kl_div():
    torch.manual_seed(0)
    s, t = torch.randn(7, 50) * 3, torch.randn(7, 50) * 3
    targets = torch.randint(0, 50, (7,))
    for temperature in (1.0, 2.5):
        ce, kl = distill_terms(s, t, targets, temperature)
        assert ce.item() == pytest.approx(F.cross_entropy(s, targets, reduction="sum").item(), rel=1e-6)
        want = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                        reduction="sum")
        assert kl.item() == pytest.approx(want.item(), rel=1e-5)


def run_sft(tmp_path, capsys, name, *extra, main=ts.main, std=None):
    base = make_checkpoint(tmp_path / "student.pth", seed=0, std=std)
    data = write_chat(tmp_path / "chat.jsonl", n=24)
    out = tmp_path / name
    code, stdout, err = run_main(main, ["--base", str(base), "--data_path", str(data), "--out_dir", str(out), *FAST,
                                        "--max_steps", "8", "--learning_rate", "3e-3", "--val_ratio", "0.2",
                                        "--eval_interval", "2", *extra], capsys)
    assert code == 0, err
    return out, stdout


def test_alpha_1_trains_as_without_a_teacher(tmp_path, capsys):
    teacher = make_checkpoint(tmp_path / "teacher.pth", seed=7, std=0.08)
    plain, _ = run_sft(tmp_path, capsys, "plain")
    taught, _ = run_sft(tmp_path, capsys, "taught", "--teacher", str(teacher), "--alpha", "1")
    wa, wb = (load_checkpoint(o / "full_sft_64.pth")["model"] for o in (plain, taught))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.parametrize("main, run", [(ts.main, "full_sft_64"), (tl.main, "lora_music_64")])
def test_alpha_0_brings_the_student_to_the_teacher(tmp_path, capsys, main, run):
    """A teacher the student can reach: for full SFT its own start after 30 steps of SFT on the data; for a
    LoRA its start with a random adapter (an adapter file: the teacher loads on its base). Distilled with
    alpha 0, the student's KL to it on held-out replies falls (by half; a LoRA's by 30%)."""
    if main is ts.main:
        teacher = run_sft(tmp_path, capsys, "teacher", "--max_steps", "30", "--learning_rate", "1e-2")[0] / "full_sft_64.pth"
    else:
        model = make_model(seed=0, hidden_size=64, std=0.08)           # the student's start (make_checkpoint's)
        apply_lora(model, LoRAConfig(r=4, alpha=16))
        randomize_lora_B(model, std=0.1)
        teacher = tmp_path / "teacher.pth"
        save_checkpoint(teacher, merged_state_dict(model), model.config, default_tokenizer(), {"stage": "full_sft"})
    out, stdout = run_sft(tmp_path, capsys, "out", "--teacher", str(teacher), "--alpha", "0", "--temperature", "2",
                          "--max_steps", "30", "--eval_interval", "5",
                          "--learning_rate", "1e-2", main=main, std=None if main is ts.main else 0.08)
    rows = [json.loads(x) for x in (out / "logs" / f"{run}.jsonl").read_text().splitlines()[1:]]
    kl = [r["val_kl"] for r in rows if "val_kl" in r]
    assert kl[-1] < (0.5 if main is ts.main else 0.7) * kl[0], kl
    assert all("kl" in r and "ce" in r for r in rows if "loss" in r)
    assert "0 * CE + 1 * 2^2 * KL" in stdout and "val_kl " in stdout
    saved = torch.load(next(out.rglob(f"{run}.pth")), weights_only=True)
    assert saved["meta"]["distill"] == {"teacher": str(teacher), "alpha": 0.0, "temperature": 2.0,
                                        "teacher_dtype": "float32"}


def test_a_teacher_with_another_tokenizer_is_one_line(tmp_path, capsys):
    tok = default_tokenizer()
    other = SentencePieceHFTokenizer(tok.model_bytes, "<|endoftext|>", "<|pad|>", "<|im_start|>", add_bos=True)
    model = make_model(vocab_size=tok.vocab_size)
    save_checkpoint(tmp_path / "teacher.pth", model.state_dict(), model.config, other, {"stage": "full_sft"})
    base = make_checkpoint(tmp_path / "student.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=8)
    out = tmp_path / "out"
    code, _, err = run_main(ts.main, ["--base", str(base), "--data_path", str(data), "--out_dir", str(out), *FAST,
                                      "--teacher", str(tmp_path / "teacher.pth")], capsys)
    line, = err.strip().splitlines()
    assert code == 2 and "its tokenizer is not the student's" in line
    assert not any(p.is_file() for p in out.rglob("*.pth"))
    code, _, err = run_main(ts.main, ["--base", str(base), "--data_path", str(data), "--out_dir", str(out), *FAST,
                                      "--teacher", str(tmp_path / "teacher.pth"), "--alpha", "1.5"], capsys)
    assert code == 2 and "--alpha" in err

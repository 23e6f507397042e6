"""The out/ layout (checkpoint/layout.py), the inference loader (inference/load.py) and the prompt builder.

    pytest tests/test_paths.py
"""
import pytest
import torch

from factories import REPO, make_adapter, make_checkpoint, run_python
from checkpoint import layout
from core.errors import UserError
from inference.prompt import build_prompt
from inference.load import load_for_inference
from tokenizer.tokenizer import encode_chat


def test_names_round_trip():
    for stage, hidden, moe, lora in (("pretrain", 512, False, None), ("full_sft", 768, True, None),
                                     ("lora", 64, False, "lora_music"), ("lora", 256, True, "my_lora_2")):
        name = layout.checkpoint_name(stage, hidden, moe, lora_name=lora)
        assert layout.parse_name(name) == (lora or stage, hidden, moe)
    assert layout.parse_name("notes.txt") is None
    assert layout.merged_path("out/lora/lora_music_512.pth", 512).as_posix() == "out/lora_music_merged_512.pth"
    assert layout.merged_path("x/lora/a_64_moe.pth", 64, True).as_posix() == "x/a_merged_64_moe.pth"


def test_out_dir_flag_then_env_then_repo(monkeypatch, tmp_path):
    monkeypatch.delenv(layout.OUT_ENV, raising=False)
    assert layout.out_dir() == REPO / "out"
    monkeypatch.setenv(layout.OUT_ENV, str(tmp_path / "env"))
    assert layout.out_dir() == tmp_path / "env"
    assert layout.out_dir(tmp_path / "flag") == tmp_path / "flag"


def test_find_stage_checkpoint_picks_predictably(tmp_path):
    with pytest.raises(UserError, match=r"full_sft_512.pth: checkpoint not found.*train_full_sft.py"):
        layout.find_stage_checkpoint(tmp_path, "full_sft")
    make_checkpoint(tmp_path / "full_sft_64.pth")
    assert layout.find_stage_checkpoint(tmp_path, "full_sft").name == "full_sft_64.pth"     # the only one
    make_checkpoint(tmp_path / "full_sft_64_moe.pth")                                     # another kind
    assert layout.find_stage_checkpoint(tmp_path, "full_sft").name == "full_sft_64.pth"
    make_checkpoint(tmp_path / "full_sft_128.pth", hidden=128)
    with pytest.raises(UserError, match="several full_sft checkpoints"):
        layout.find_stage_checkpoint(tmp_path, "full_sft")
    assert layout.find_stage_checkpoint(tmp_path, "full_sft", 128).name == "full_sft_128.pth"
    make_checkpoint(tmp_path / "full_sft_512.pth", hidden=512)
    assert layout.find_stage_checkpoint(tmp_path, "full_sft").name == "full_sft_512.pth"   # MiniMind's default
    (tmp_path / ".full_sft_256.pth.tmp123").write_bytes(b"")                              # a temporary
    assert [p.name for p in layout.find_checkpoints(tmp_path)] == [
        "full_sft_128.pth", "full_sft_512.pth", "full_sft_64.pth", "full_sft_64_moe.pth"]


def test_trainer_and_eval_honour_the_env_out_dir(tmp_path):
    """TINYMIND_OUT_DIR is where every command reads and writes when --out_dir is not given."""
    out = tmp_path / "envout"
    make_checkpoint(out / "full_sft_64.pth")
    env = {layout.OUT_ENV: str(out)}
    r = run_python(["eval_model.py", "--prompt", "hi", "--max_new_tokens", "2"], REPO, env)
    assert "full_sft_64.pth" in r.stderr
    chat = out.parent / "chat.jsonl"
    chat.write_text('{"conversations": [{"role": "user", "content": "hi"}, '
                    '{"role": "assistant", "content": "hello"}]}\n' * 8)
    run_python(["trainer/train_lora.py", "--data_path", str(chat), "--max_steps", "1", "--batch_size", "2",
                "--val_ratio", "0", "--device", "cpu"], REPO, env)
    assert (out / "lora" / "lora_music_64.pth").is_file() and (out / "logs" / "lora_music_64.jsonl").is_file()


def test_loader_takes_checkpoints_and_adapters_alike(tmp_path):
    base = make_checkpoint(tmp_path / "out" / "full_sft_64.pth")
    adapter = tmp_path / "out" / "lora" / "a_64.pth"
    wrapped = make_adapter(adapter, base)
    x = torch.randint(0, 300, (1, 9))
    plain = load_for_inference(ckpt=base)
    assert plain.label == "full_sft_64" and "adapter" not in plain.info and not plain.continuation
    for m in (load_for_inference(adapter=adapter), load_for_inference(ckpt=adapter),      # sniffed by format
              load_for_inference(adapter=adapter, merge=False)):
        assert m.label == "a_64" and m.info["adapter"]["path"] == str(adapter)
        torch.testing.assert_close(m.model(x).logits, wrapped(x).logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain.model(x).logits, wrapped(x).logits)
    with pytest.raises(ValueError):
        load_for_inference(ckpt=base, adapter=adapter)


def test_one_prompt_builder(tokenizer):
    msgs = [{"role": "user", "content": "Who are you?"}]
    assert build_prompt(tokenizer, msgs, "Be brief.") == encode_chat(tokenizer, msgs, True, "Be brief.")[0]
    cont = build_prompt(tokenizer, msgs, continuation=True)
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    assert cont == bos + tokenizer.encode("Who are you?")

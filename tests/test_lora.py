"""LoRA: identity at init, merge == unmerged, only adapters train, adapter files checked, parity with peft,
and scripts/merge_lora.py end to end.

    python -m pytest tests/test_lora.py -q
"""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.checkpoint import file_sha256, load_checkpoint, load_model, save_checkpoint
from model.config import ModelConfig, get_preset
from model.errors import UserError
from model.lora import (DEFAULT_TARGETS, LoRAConfig, LoRALinear, apply_lora, attach_adapter, check_adapter,
                        count_parameters, load_adapter, load_model_with_adapter, lora_state_dict, merge_lora,
                        merged_state_dict, save_adapter, unmerge_lora)
from model.model import TinyMindForCausalLM

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return TinyMindForCausalLM(get_preset("tiny", vocab_size=300, **overrides)).eval()


def randomize_lora_B(model, seed=1):
    """LoRA B starts at zero; give it values so the adapter changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * 0.1)


def ids(B=2, T=12, vocab=300, seed=0):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits(model, x):
    return model(x).logits


def test_init_equals_base_and_every_projection_is_wrapped():
    base = tiny_model()
    x = ids()
    before = logits(base, x)
    wrapped = apply_lora(base, LoRAConfig())
    # k/v are not square under grouped-query attention (64 -> 32) and are wrapped all the same
    assert len(wrapped) == 7 * 2 and {w.rsplit(".", 1)[-1] for w in wrapped} == set(DEFAULT_TARGETS)
    assert base.model.layers[0].self_attn.k_proj.lora_B.weight.shape == (32, 8)
    assert torch.equal(logits(base, x), before)
    assert "r=8, alpha=16" in repr(base.model.layers[0].self_attn.q_proj)
    trainable, total = count_parameters(base)
    assert trainable == sum(p.numel() for p in lora_state_dict(base).values()) and total > trainable


def test_merge_equals_unmerged_and_is_idempotent():
    model = tiny_model()
    apply_lora(model, LoRAConfig(r=4, alpha=8))
    randomize_lora_B(model)
    x = ids()
    unmerged = logits(model, x)
    assert not torch.allclose(unmerged, logits(tiny_model(), x))       # the adapter does something
    base_w = model.model.layers[0].mlp.up_proj.base.weight.clone()
    merge_lora(model)
    merged_once = logits(model, x)
    merge_lora(model)                                                  # merging twice = merging once
    torch.testing.assert_close(logits(model, x), merged_once)
    torch.testing.assert_close(merged_once, unmerged, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    unmerge_lora(model)
    torch.testing.assert_close(model.model.layers[0].mlp.up_proj.base.weight, base_w, atol=1e-6, rtol=0)
    torch.testing.assert_close(logits(model, x), unmerged, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("merged", [False, True])
def test_merged_state_dict_has_base_keys_and_output(merged):
    model = tiny_model()
    apply_lora(model, LoRAConfig())
    randomize_lora_B(model)
    x = ids()
    want = logits(model, x)
    if merged:
        merge_lora(model)
    sd = merged_state_dict(model)
    assert list(sd) == list(tiny_model().state_dict())
    plain = TinyMindForCausalLM(model.config).eval()
    plain.load_state_dict(sd, strict=True)
    torch.testing.assert_close(logits(plain, x), want, atol=1e-5, rtol=1e-5)


def test_moe_experts_are_targets():
    model = tiny_model(use_moe=True, num_experts=2)
    wrapped = apply_lora(model, LoRAConfig(targets=("gate_proj", "down_proj")))
    assert "model.layers.1.mlp.experts.1.down_proj" in wrapped and len(wrapped) == 2 * 2 * 2


def test_only_lora_weights_change_in_training():
    model = tiny_model().train()
    apply_lora(model, LoRAConfig(dropout=0.1))
    base_before = {k: v.clone() for k, v in model.state_dict().items() if ".lora_" not in k}
    lora_before = {k: v.clone() for k, v in lora_state_dict(model).items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = ids(T=16)
    for _ in range(3):
        model(x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    for k, v in model.state_dict().items():
        if k in base_before:
            assert torch.equal(v, base_before[k]), k
    assert all(not torch.equal(v, lora_before[k]) for k, v in lora_state_dict(model).items())


def test_rslora_scaling():
    model = tiny_model()
    apply_lora(model, LoRAConfig(r=16, alpha=8, use_rslora=True))
    assert model.model.layers[0].self_attn.q_proj.scaling == pytest.approx(8 / math.sqrt(16))
    model = tiny_model()
    apply_lora(model, LoRAConfig(r=16, alpha=8))
    assert model.model.layers[0].self_attn.q_proj.scaling == pytest.approx(8 / 16)


def test_unknown_target_names_the_flag_and_the_choices():
    with pytest.raises(UserError) as e:
        apply_lora(tiny_model(), LoRAConfig(targets="q_proj,qkv"))
    msg = str(e.value)
    assert "--lora_targets" in msg and "qkv" in msg and "down_proj" in msg and "\n" not in msg


# adapter files ------------------------------------------------------------------------------------------

def make_adapter(tmp_path, base_path, tokenizer, cfg=LoRAConfig()):
    """A base checkpoint's model with a trained-looking adapter, saved; returns (model, adapter path)."""
    model, _, ckpt = load_model(base_path)
    apply_lora(model, cfg)
    randomize_lora_B(model)
    path = tmp_path / "out" / "lora" / "lora_test_64.pth"
    save_adapter(path, model, cfg, base_path, file_sha256(base_path), ModelConfig.from_dict(ckpt["config"]),
                 tokenizer.sha256, {"step": 3, "train_config": {"data_path": "x.jsonl"}})
    return model, path


def test_adapter_round_trip(tmp_path, tiny_checkpoint, tokenizer):
    model, path = make_adapter(tmp_path, tiny_checkpoint, tokenizer)
    x = ids(vocab=tokenizer.vocab_size)
    loaded, tok, base_ckpt, adapter = load_model_with_adapter(path)
    assert torch.equal(logits(loaded, x), logits(model, x))
    assert adapter["meta"]["stage"] == "lora" and set(adapter["lora"]) == set(lora_state_dict(model))
    assert tok.sha256 == tokenizer.sha256 and base_ckpt["path"] == str(tiny_checkpoint)
    assert not list(path.parent.glob("*.tmp*"))                        # written atomically


def test_adapter_refuses_another_base_config(tmp_path, tiny_checkpoint, tokenizer, tiny_config):
    _, path = make_adapter(tmp_path, tiny_checkpoint, tokenizer)
    other_cfg = ModelConfig.from_dict({**tiny_config.to_dict(), "hidden_size": 32, "intermediate_size": 0,
                                       "head_dim": 0})
    other = tmp_path / "other.pth"
    save_checkpoint(other, TinyMindForCausalLM(other_cfg).state_dict(), other_cfg, tokenizer, {})
    with pytest.raises(UserError) as e:
        load_model_with_adapter(path, base_path=other, force=True)     # force never skips this
    msg = str(e.value)
    assert str(path) in msg and str(other) in msg and "hidden_size 64 vs 32" in msg and "\n" not in msg


def test_adapter_refuses_changed_base_unless_forced(tmp_path, tiny_checkpoint, tokenizer, tiny_config):
    _, path = make_adapter(tmp_path, tiny_checkpoint, tokenizer)
    torch.manual_seed(5)
    retrained = tmp_path / "retrained.pth"
    save_checkpoint(retrained, TinyMindForCausalLM(tiny_config).state_dict(), tiny_config, tokenizer, {})
    with pytest.raises(UserError) as e:
        load_model_with_adapter(path, base_path=retrained)
    assert "sha256" in str(e.value) and "--force" in str(e.value) and str(retrained) in str(e.value)
    model, *_ = load_model_with_adapter(path, base_path=retrained, force=True)
    assert isinstance(model.model.layers[0].self_attn.q_proj, LoRALinear)


def test_adapter_shapes_checked_even_when_forced(tmp_path, tiny_checkpoint, tokenizer):
    _, path = make_adapter(tmp_path, tiny_checkpoint, tokenizer)
    adapter = load_adapter(path)
    key = next(iter(adapter["lora"]))
    adapter["lora"][key] = adapter["lora"][key][:, :-1]
    model, _, ckpt = load_model(tiny_checkpoint)
    check_adapter(adapter, ckpt, tiny_checkpoint, force=True)
    with pytest.raises(UserError, match="has shape"):
        attach_adapter(model, adapter)


def test_adapter_refuses_another_tokenizer(tmp_path, tiny_checkpoint, tokenizer):
    _, path = make_adapter(tmp_path, tiny_checkpoint, tokenizer)
    adapter = load_adapter(path)
    adapter["tokenizer_sha256"] = "0" * 64
    with pytest.raises(UserError, match="tokenizer differs"):
        check_adapter(adapter, load_checkpoint(tiny_checkpoint), tiny_checkpoint, force=True)


def test_corrupt_or_foreign_adapter_is_one_line(tmp_path, tiny_checkpoint, tokenizer):
    _, path = make_adapter(tmp_path, tiny_checkpoint, tokenizer)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for bad, expect in [(path, "corrupt"), (tiny_checkpoint, "not a TinyMind LoRA adapter"),
                        (tmp_path / "missing.pth", "not found")]:
        with pytest.raises(UserError) as e:
            load_adapter(bad)
        assert expect in str(e.value) and str(bad) in str(e.value) and "\n" not in str(e.value)


def test_missing_recorded_base_names_the_file(tmp_path, tiny_checkpoint, tokenizer):
    _, path = make_adapter(tmp_path, tiny_checkpoint, tokenizer)
    tiny_checkpoint.rename(tmp_path / "moved.pth")
    with pytest.raises(UserError, match="--base"):
        load_model_with_adapter(path)


# parity with peft ---------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("use_rslora", [False, True])
def test_logits_equal_peft(use_rslora):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    cfg = get_preset("tiny", vocab_size=300)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=True, max_position_embeddings=256))
    ours = TinyMindForCausalLM(cfg)
    ours.load_state_dict(hf.state_dict(), strict=True)
    lcfg = LoRAConfig(r=4, alpha=12, targets=DEFAULT_TARGETS, use_rslora=use_rslora)
    hf = peft.get_peft_model(hf, peft.LoraConfig(r=lcfg.r, lora_alpha=lcfg.alpha, lora_dropout=0.0,
                                                 target_modules=list(lcfg.targets), use_rslora=use_rslora))
    apply_lora(ours, lcfg)
    randomize_lora_B(ours)
    ours_lora = lora_state_dict(ours)
    n = 0
    for name, p in hf.named_parameters():
        if ".lora_" in name:                    # base_model.model.<ours>.lora_A.default.weight
            key = name.replace("base_model.model.", "", 1).replace(".default.", ".")
            with torch.no_grad():
                p.copy_(ours_lora[key])
            n += 1
    assert n == len(ours_lora)
    assert count_parameters(ours)[0] == sum(p.numel() for p in hf.parameters() if p.requires_grad)
    x = ids(vocab=300, T=20)
    hf.eval(), ours.eval()
    with torch.no_grad():
        diff = (hf(input_ids=x).logits - ours(x).logits).abs().max().item()
    assert diff < 1e-5


# scripts/merge_lora.py ----------------------------------------------------------------------------------

def run_merge(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "merge_lora.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_merge_cli_end_to_end(tmp_path, tiny_checkpoint, tokenizer):
    model, path = make_adapter(tmp_path, tiny_checkpoint, tokenizer)
    r = run_merge("--adapter", path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out" / "lora_test_merged_64.pth"
    assert r.stdout.strip().splitlines()[-1] == f"saved {out}"
    merged, tok, ckpt = load_model(out)
    x = ids(vocab=tokenizer.vocab_size)
    torch.testing.assert_close(logits(merged, x), logits(model.eval(), x), atol=1e-5, rtol=1e-5)
    meta = ckpt["meta"]
    assert meta["stage"] == "merged" and meta["parent"]["sha256"] == file_sha256(tiny_checkpoint)
    assert meta["adapter"]["sha256"] == file_sha256(path) and tok.sha256 == tokenizer.sha256

    # a base whose bytes changed: one line, exit 2, nothing written
    torch.manual_seed(7)
    changed = tmp_path / "changed.pth"
    save_checkpoint(changed, TinyMindForCausalLM(model.config).state_dict(), model.config, tokenizer, {})
    r = run_merge("--adapter", path, "--base", changed, "--out", tmp_path / "bad.pth")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "--force" in r.stderr and not (tmp_path / "bad.pth").exists()

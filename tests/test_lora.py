"""LoRA: identity at init, merge == unmerged, only adapters train, adapter files checked, parity with peft,
and scripts/merge_lora.py end to end.

    python -m pytest tests/test_lora.py -q
"""
import math

import pytest
import torch

from factories import REPO, make_adapter, make_checkpoint, make_model, randomize_lora_B, run_python
from checkpoint.adapter import attach_adapter, check_adapter, load_adapter, load_model_with_adapter
from checkpoint.pth import file_sha256, load_checkpoint, load_model
from model.config import get_preset
from core.errors import UserError
from model.lora import (DEFAULT_TARGETS, LoRAConfig, LoRALinear, apply_lora, count_parameters, lora_state_dict,
                        merge_lora, merged_state_dict, unmerge_lora)
from model.lora_fused import LoRAFunction
from model.model import TinyMindForCausalLM


def tiny_model(seed=0, **overrides):
    return make_model(300, seed, **overrides)


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


@pytest.mark.parametrize("bias", [False, True])
def test_lora_function_gradcheck(bias):
    """LoRAFunction's hand-written forward and backward against x W^T + b + s (x A^T) B^T and finite
    differences, in float64, x of shape (B, T, in) and B non-zero: every input trainable, then LoRA training
    (frozen base weight and bias), then also an input that needs no gradient (the first wrapped layer)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()
    x, w, a, b = rand(2, 3, 5), rand(4, 5), rand(2, 5), rand(4, 2)          # in 5, out 4, r 2
    bias_t = rand(4) if bias else None
    s = 1.5
    want = x @ w.t() + (bias_t if bias else 0) + s * (x @ a.t()) @ b.t()
    torch.testing.assert_close(LoRAFunction.apply(x, w, bias_t, a, b, s), want, rtol=1e-12, atol=1e-12)
    frozen_bias = bias_t.detach() if bias else None
    for inputs in [(x, w, bias_t, a, b, s), (x, w.detach(), frozen_bias, a, b, s),
                   (x.detach(), w.detach(), frozen_bias, a, b, s)]:
        assert torch.autograd.gradcheck(LoRAFunction.apply, inputs)


@pytest.mark.parametrize("bias", [False, True])
def test_lora_linear_without_dropout_takes_lora_function(bias):
    """No dropout (or dropout in eval mode): the fused LoRAFunction path, with the output and gradients of
    the plain expression base(x) + s * B(A x). Dropout in training takes the general path."""
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(16, 24, bias=bias), r=4, alpha=8)
    torch.nn.init.normal_(layer.lora_B.weight, std=0.1)
    x = torch.randn(2, 5, 16, requires_grad=True)
    y = layer(x)
    assert type(y.grad_fn).__name__ == "LoRAFunctionBackward"
    ref = layer.base(x) + layer.scaling * layer.lora_B(layer.lora_A(x))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    wrt = [x, *layer.parameters()]
    dy = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, wrt, dy), torch.autograd.grad(ref, wrt, dy)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    dropped = LoRALinear(torch.nn.Linear(16, 24, bias=bias), r=4, alpha=8, dropout=0.1)
    assert type(dropped.train()(x).grad_fn).__name__ != "LoRAFunctionBackward"
    assert type(dropped.eval()(x).grad_fn).__name__ == "LoRAFunctionBackward"


def test_unknown_target_names_the_choices():
    with pytest.raises(UserError) as e:       # the trainer adds the flag's name (tests/test_train_bad_input.py)
        apply_lora(tiny_model(), LoRAConfig(targets="q_proj,qkv"))
    msg = str(e.value)
    assert "LoRA targets" in msg and "qkv" in msg and "down_proj" in msg and "\n" not in msg


def test_adapter_round_trip(tmp_path, tiny_checkpoint, tokenizer):
    path = tmp_path / "out" / "lora" / "lora_test_64.pth"
    model = make_adapter(path, tiny_checkpoint)
    x = ids(vocab=tokenizer.vocab_size)
    loaded, tok, base_ckpt, adapter = load_model_with_adapter(path)
    assert torch.equal(logits(loaded, x), logits(model, x))
    assert not torch.allclose(logits(loaded, x), logits(load_model(tiny_checkpoint)[0], x))   # B is not zero
    assert adapter["meta"]["stage"] == "lora" and set(adapter["lora"]) == set(lora_state_dict(model))
    assert tok.sha256 == tokenizer.sha256 and base_ckpt["path"] == str(tiny_checkpoint)
    assert not list(path.parent.glob("*.tmp*"))                        # written atomically


def test_adapter_refuses_another_base_config(tmp_path, tiny_adapter):
    path = tiny_adapter
    other = make_checkpoint(tmp_path / "other.pth", hidden=32)
    with pytest.raises(UserError) as e:
        load_model_with_adapter(path, base_path=other, force=True)     # force never skips this
    msg = str(e.value)
    assert str(path) in msg and str(other) in msg and "hidden_size 64 vs 32" in msg and "\n" not in msg


def test_adapter_refuses_changed_base_unless_forced(tmp_path, tiny_adapter):
    path = tiny_adapter
    retrained = make_checkpoint(tmp_path / "retrained.pth", seed=5)
    with pytest.raises(UserError) as e:
        load_model_with_adapter(path, base_path=retrained)
    assert "sha256" in str(e.value) and "--force" in str(e.value) and str(retrained) in str(e.value)
    model, *_ = load_model_with_adapter(path, base_path=retrained, force=True)
    assert isinstance(model.model.layers[0].self_attn.q_proj, LoRALinear)


def test_adapter_shapes_checked_even_when_forced(tiny_adapter, tiny_checkpoint):
    adapter = load_adapter(tiny_adapter)
    key = next(iter(adapter["lora"]))
    adapter["lora"][key] = adapter["lora"][key][:, :-1]
    model, _, ckpt = load_model(tiny_checkpoint)
    check_adapter(adapter, ckpt, tiny_checkpoint, force=True)
    with pytest.raises(UserError, match="has shape"):
        attach_adapter(model, adapter)


def test_adapter_refuses_another_tokenizer(tiny_adapter, tiny_checkpoint):
    adapter = load_adapter(tiny_adapter)
    adapter["tokenizer_sha256"] = "0" * 64
    with pytest.raises(UserError, match="tokenizer differs"):
        check_adapter(adapter, load_checkpoint(tiny_checkpoint), tiny_checkpoint, force=True)


def test_corrupt_or_foreign_adapter_is_one_line(tmp_path, tiny_adapter, tiny_checkpoint):
    path = tiny_adapter
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for bad, expect in [(path, "corrupt"), (tiny_checkpoint, "not a TinyMind LoRA adapter"),
                        (tmp_path / "missing.pth", "not found")]:
        with pytest.raises(UserError) as e:
            load_adapter(bad)
        assert expect in str(e.value) and str(bad) in str(e.value) and "\n" not in str(e.value)


def test_missing_recorded_base_names_the_file(tmp_path, tiny_adapter, tiny_checkpoint):
    tiny_checkpoint.rename(tmp_path / "moved.pth")
    with pytest.raises(UserError, match="--base"):
        load_model_with_adapter(tiny_adapter)


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


def run_merge(*args):
    return run_python(["scripts/merge_lora.py", *map(str, args)], cwd=REPO, check=False)


def test_merge_cli_end_to_end(tmp_path, tiny_checkpoint, tokenizer):
    path = tmp_path / "out" / "lora" / "lora_test_64.pth"
    model = make_adapter(path, tiny_checkpoint)
    r = run_merge("--adapter", path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out" / "lora_test_merged_64.pth"
    assert r.stdout.strip().splitlines()[-1] == f"saved {out}"
    merged, tok, ckpt = load_model(out)
    x = ids(vocab=tokenizer.vocab_size)
    torch.testing.assert_close(logits(merged, x), logits(model.eval(), x), atol=1e-5, rtol=1e-5)
    meta = ckpt["meta"]
    assert meta["stage"] == "merged" and meta["parent_sha256"] == file_sha256(tiny_checkpoint)
    assert meta["adapter"]["sha256"] == file_sha256(path) and tok.sha256 == tokenizer.sha256

    # a base whose bytes changed: one line, exit 2, nothing written
    changed = make_checkpoint(tmp_path / "changed.pth", seed=7)
    r = run_merge("--adapter", path, "--base", changed, "--out", tmp_path / "bad.pth")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "--force" in r.stderr and not (tmp_path / "bad.pth").exists()

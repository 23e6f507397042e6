"""Inference precisions (inference/precision.py): int8 weight-only quantisation and bfloat16 against float32, on
the layer, on a whole model's greedy output, and through every loader and command that takes --dtype.

    pytest tests/test_precision.py
"""
import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from factories import REPO, make_adapter, make_checkpoint, make_model, train_memorizer
from inference import precision
from inference.generate import generate
from inference.load import load_for_inference
from inference.precision import Int4Linear, Int8Linear, apply_precision, precision_of, quantize_int4, quantize_weight

PROMPT = [5, 100, 200, 300, 400, 500, 600, 700]


@pytest.fixture(scope="module")
def memorizer():
    return train_memorizer(PROMPT)


def test_quantised_weight_is_within_half_a_step_per_output_channel():
    w = torch.randn(48, 32) * torch.linspace(0.01, 3, 48)[:, None]     # rows of very different size
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and scale.shape == (48,)
    assert int(q.abs().max()) == 127                                     # each row uses the full range
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("rows,width", [(1, 64), (precision.KERNEL_ROWS, 64), (precision.KERNEL_ROWS + 1, 64),
                                        (40, 64), (1, 40), (3, 36)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_is_the_matmul_with_its_dequantised_weight(rows, width, dtype, monkeypatch):
    """Both paths (the int8 kernel for a few rows, a dense matmul for many) compute x W_q^T + b; an input
    width the kernel cannot take (not a multiple of 16: wrong numbers or a crash there) takes the dense one."""
    torch.manual_seed(0)
    linear = nn.Linear(width, 96)
    layer = Int8Linear(linear, dtype)
    x = torch.randn(1, rows, width).to(dtype)
    ref = (x.float() @ layer.dequantized().float().t() + linear.bias.detach().float())
    calls, kernel = [], torch._weight_int8pack_mm
    monkeypatch.setattr(torch, "_weight_int8pack_mm", lambda *a: calls.append(1) or kernel(*a))
    y = layer(x)
    assert len(calls) == (rows <= precision.KERNEL_ROWS and width % 16 == 0)   # decoding takes the int8 kernel
    assert y.dtype == dtype and y.shape == (1, rows, 96)
    tol = 2e-5 if dtype == torch.float32 and rows > precision.KERNEL_ROWS else 0.05   # bf16 activations
    assert torch.allclose(y.float(), ref, atol=tol, rtol=0.02)
    # and close to the float layer: int8 costs little
    full = linear(x.float())
    assert torch.nn.functional.cosine_similarity(y.float().flatten(), full.flatten(), dim=0) > 0.999


def test_int4_codes_are_within_half_a_step_of_each_group():
    w = torch.randn(48, 96) * torch.linspace(0.01, 3, 48)[:, None]
    q, sz = quantize_int4(w, 32)
    assert q.dtype == torch.int32 and int(q.min()) == 0 and int(q.max()) == 15 and sz.shape == (3, 48, 2)
    scale, zero = sz[..., 0].t(), sz[..., 1].t()                         # (out, groups)
    deq = ((q.float().reshape(48, 3, 32) - 8) * scale[..., None] + zero[..., None]).reshape(48, 96)
    assert ((deq - w).abs().reshape(48, 3, 32) <= scale[..., None] / 2 + 1e-6).all()


@pytest.mark.parametrize("rows", [1, 16, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_linear_is_the_matmul_with_its_dequantised_weight(rows, dtype):
    torch.manual_seed(0)
    linear = nn.Linear(64, 96)
    layer = Int4Linear(linear, dtype)
    x = torch.randn(1, rows, 64).to(dtype)
    w = layer.dequantized()
    q, sz = quantize_int4(linear.weight, 32)                            # the kernel's weights are the codes'
    ref_w = ((q.float().reshape(96, 2, 32) - 8) * sz[..., 0].t()[..., None] + sz[..., 1].t()[..., None]).reshape(96, 64)
    assert torch.allclose(w, ref_w, atol=0.02 * ref_w.abs().max().item())
    y = layer(x)
    assert y.dtype == dtype and y.shape == (1, rows, 96)
    ref = x.float() @ w.t() + linear.bias.detach().float()
    assert torch.allclose(y.float(), ref, atol=0.05, rtol=0.02)
    full = linear(x.float())
    assert torch.nn.functional.cosine_similarity(y.float().flatten(), full.flatten(), dim=0) > 0.99


def test_int4_model_takes_every_linear_whose_width_takes_whole_groups():
    model = make_model(seed=0)
    apply_precision(model, "int4", "cpu")
    layers = [m for m in model.modules() if isinstance(m, Int4Linear)]
    assert len(layers) == 7 * model.config.num_hidden_layers and precision_of(model) == "int4"
    assert isinstance(model.lm_head, Int8Linear)                       # the output layer keeps 8 bits
    odd = make_model(seed=0, hidden_size=48, num_attention_heads=4, num_key_value_heads=2)   # 48: not whole groups
    apply_precision(odd, "int4", "cpu")
    assert not any(isinstance(m, nn.Linear) for m in odd.modules())
    assert any(isinstance(m, Int8Linear) for m in odd.modules())         # those layers fall back to int8


def test_int8_model_replaces_every_linear_and_keeps_the_embedding():
    model = make_model(seed=0)
    assert model.config.tie_word_embeddings
    n = model.num_parameters()
    apply_precision(model, "int8", "cpu")
    assert not [m for m in model.modules() if isinstance(m, nn.Linear)]
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 7 * model.config.num_hidden_layers + 1                 # + lm_head
    assert model.model.embed_tokens.weight.shape[0] == model.config.vocab_size  # still there for lookups
    assert precision_of(model) == "int8" and model.num_parameters() < n
    want = torch.bfloat16 if precision.cpu_has_bf16() else torch.float32
    assert model.model.embed_tokens.weight.dtype == want == layers[0].scale.dtype


@pytest.mark.parametrize("name", ["bfloat16", "int8", "int4"])
def test_greedy_output_agrees_with_float32(memorizer, name):
    model, continuation = memorizer
    ref = generate(model, [PROMPT], max_new_tokens=24)[0]
    assert ref == continuation[:24]                                    # what it was trained to say
    low = apply_precision(copy.deepcopy(model), name, "cpu")
    assert generate(low, [PROMPT], max_new_tokens=24)[0] == ref
    # batched, left-padded prompts decode the same as well
    out = generate(low, [PROMPT, PROMPT[2:]], max_new_tokens=16)
    assert out[0] == ref[:16]


def test_int8_logits_stay_close_to_float32_on_a_random_model():
    """A random model has near ties, so compare logits, not tokens: a wrong scale axis or a transposed
    weight would fail this."""
    model = make_model(seed=3, std=0.1)
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        ref = model(ids).logits
        low = apply_precision(copy.deepcopy(model), "int8", "cpu")(ids).logits.float()
    cos = torch.nn.functional.cosine_similarity(low.flatten(1), ref.flatten(1)).item()
    assert cos > 0.99, cos


def test_load_for_inference_applies_the_precision_and_names_it(tmp_path):
    ckpt = make_checkpoint(tmp_path / "out" / "full_sft_64.pth")
    adapter = tmp_path / "out" / "lora" / "lora_x_64.pth"
    wrapped = make_adapter(adapter, ckpt)
    m = load_for_inference(ckpt=ckpt, dtype="int8")
    assert (m.label, m.info["dtype"], precision_of(m.model)) == ("full_sft_64_int8", "int8", "int8")
    assert m.info["parameters"] == load_for_inference(ckpt=ckpt).info["parameters"]   # the float count
    assert "int8)" in m.describe()
    a = load_for_inference(adapter=adapter, dtype="int8")              # merged, then quantised
    assert a.label == "lora_x_64_int8"
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        ref = wrapped(ids).logits
        got = a.model(ids).logits.float()
    assert torch.nn.functional.cosine_similarity(got.flatten(1), ref.flatten(1)).item() > 0.99
    f = load_for_inference(ckpt=ckpt, dtype="float32")
    assert f.label == "full_sft_64" and f.info["dtype"] == "float32"
    assert load_for_inference(ckpt=ckpt, dtype="bfloat16").model.lm_head.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="int8 needs merge=True"):
        load_for_inference(adapter=adapter, dtype="int8", merge=False)
    with pytest.raises(ValueError, match="use one of float32, bfloat16, float16, int8, int4"):
        load_for_inference(ckpt=ckpt, dtype="int3")
    i4 = load_for_inference(ckpt=ckpt, dtype="int4")
    assert (i4.label, precision_of(i4.model)) == ("full_sft_64_int4", "int4")
    with pytest.raises(ValueError, match="int4 needs merge=True"):
        load_for_inference(adapter=adapter, dtype="int4", merge=False)


def test_eval_model_answers_in_int8_and_refuses_an_unknown_dtype(tmp_path):
    make_checkpoint(tmp_path / "out" / "full_sft_64.pth")
    cmd = [sys.executable, str(REPO / "eval_model.py"), "--out_dir", str(tmp_path / "out"), "--device", "cpu",
           "--prompt", "hello", "--max_new_tokens", "4", "--temperature", "0"]
    ok = subprocess.run(cmd + ["--dtype", "int8"], capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "full_sft_64.pth (full_sft, 0.51M parameters, int8)" in ok.stderr
    bad = subprocess.run(cmd + ["--dtype", "int3"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "--dtype: invalid choice: 'int3'" in bad.stderr
    assert not (tmp_path / "out" / "eval").exists()


def test_eval_bench_puts_each_precision_in_its_own_column(tmp_path, bench_cache):
    make_checkpoint(tmp_path / "out" / "full_sft_64.pth")
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "scripts" / "eval_bench.py"), "--out_dir", str(out), "--model", "full_sft",
           "--tasks", "arc_easy", "--dtype", "float32,int8", "--no_progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    table = json.loads((out / "eval" / "bench_full_sft_float32_int8.json").read_text())
    assert {r["model"] for r in table["rows"]} == {"full_sft_64", "full_sft_64_int8"}
    report = json.loads((out / "eval" / "bench_arc_easy_0shot_full_sft_64_int8.json").read_text())
    ref = json.loads((out / "eval" / "bench_arc_easy_0shot_full_sft_64.json").read_text())
    same = [a["pred"] == b["pred"] for a, b in zip(report["items"], ref["items"])]
    assert report["agreement"]["with"] == "full_sft_64" and "agreement" not in ref
    assert report["agreement"]["acc"] == sum(same) / len(same)
    assert "same prediction as full_sft_64: acc " in run.stdout
    bad = subprocess.run(cmd[:-3] + ["--dtype", "float32,int3"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().endswith(
        "--dtype int3: use one of float32, bfloat16, float16, int8, int4 (or several, comma-separated)")
    twice = subprocess.run(cmd[:-3] + ["--dtype", "int8,int8"], capture_output=True, text=True, cwd=tmp_path)
    assert twice.returncode == 2 and twice.stderr.strip().endswith("--dtype int8,int8: each precision once")

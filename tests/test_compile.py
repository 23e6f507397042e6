"""--compile: a compiled training step gives eager's loss and gradients (float32 full fine-tuning, and a LoRA
over a base held in bfloat16 under autocast, at two lengths so the shapes go dynamic, with and without
--gradient_checkpointing); decoding with a cache stays eager and builds no graph; a trainer run with the
flag logs eager's losses, DPO's copied reference included; where no C++ compiler works, one warning and the run goes on eager."""
import copy
import os
import subprocess
import sys

import pytest
import torch
from torch._dynamo.utils import counters

from core.compiling import compile_model
from factories import FAST, losses_with_and_without, make_checkpoint, make_model, write_chat
from inference.generate import generate
from model.lora import LoRAConfig, apply_lora
from trainer.components import hold_frozen_in


def step(model, ids, labels, autocast):
    """Loss and every trainable gradient of one forward/backward."""
    model.zero_grad(set_to_none=True)
    with autocast:
        loss = model(ids, labels=labels, loss_reduction="sum", targets_only=True).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def compiled_calls(prof):
    """How many times a compiled graph was entered."""
    return sum("Torch-Compiled Region" in e.name for e in prof.events())


def batches(model):
    g = torch.Generator().manual_seed(0)
    for T in (24, 17, 31):                      # a new length after the first: the graph goes dynamic
        ids = torch.randint(0, model.config.vocab_size, (3, T), generator=g)
        labels = ids.clone()
        labels[:, : T // 2] = -100              # targets on the second half, as a chat answer
        yield ids, labels


def lora_model():
    model = make_model()
    apply_lora(model, LoRAConfig(r=4, alpha=8))
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)          # B non-zero: every LoRA gradient is exercised
    assert hold_frozen_in(model, torch.bfloat16) > 0
    return model


@pytest.mark.parametrize("kind,checkpointing", [("float32", False), ("lora_bf16", False), ("lora_bf16", True)])
def test_compiled_step_equals_eager(kind, checkpointing):
    counters.clear()
    torch.manual_seed(0)
    eager = make_model() if kind == "float32" else lora_model()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind != "float32")
    compiled = copy.deepcopy(eager)
    line = compile_model(compiled)
    assert line.startswith("compile: 2 blocks and the loss")
    # float32: the same sums in another order; bfloat16: the base's products round alike, sums may differ
    tol = dict(rtol=1e-4, atol=1e-5) if kind == "float32" else dict(rtol=2e-2, atol=2e-3)
    for model in (eager, compiled):
        model.train().set_gradient_checkpointing(checkpointing)
    for ids, labels in batches(eager):
        loss_e, grads_e = step(eager, ids, labels, autocast)
        with torch.profiler.profile() as prof:
            loss_c, grads_c = step(compiled, ids, labels, autocast)
        assert compiled_calls(prof) >= 3                       # both blocks and the loss ran compiled
        torch.testing.assert_close(loss_c, loss_e, **tol)
        assert grads_e.keys() == grads_c.keys() and grads_e
        for name in grads_e:
            torch.testing.assert_close(grads_c[name], grads_e[name], **tol, msg=name)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    assert not counters["graph_break"], dict(counters["graph_break"])   # each block one whole graph


def test_decoding_with_a_cache_stays_eager():
    torch.manual_seed(0)
    model = make_model().eval()
    want = generate(model, [[5, 6, 7, 8]], max_new_tokens=6)
    compile_model(model)
    before = counters["stats"]["unique_graphs"]
    with torch.profiler.profile() as prof:
        assert generate(model, [[5, 6, 7, 8]], max_new_tokens=6) == want
    assert counters["stats"]["unique_graphs"] == before and compiled_calls(prof) == 0


def test_trainer_flag_logs_eager_losses(tmp_path, capsys):
    import trainer.train_full_sft as ts
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=40)
    runs = losses_with_and_without(ts.main, ["--base", str(base), "--data_path", str(data), "--max_steps", "3",
                                             "--batch_size", "4", "--log_interval", "1", "--dtype", "float32",
                                             "--device", "cpu"], "--compile", tmp_path, "full_sft_64")
    assert runs[False][1]["compile"] is False and runs[True][1]["compile"] is True
    assert "compile: 2 blocks and the loss through torch.compile" in capsys.readouterr().out
    assert len(runs[True][0]) == 3
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4)


def test_dpo_reference_copied_before_compiling(tmp_path):
    """DPO's reference is a copy of the starting model; it must stay the starting model, not follow the
    compiled policy (every margin would then stay 0, loss log 2)."""
    import trainer.train_dpo as td
    from test_dpo import write_random_pairs
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_random_pairs(tmp_path / "pairs.jsonl", n=16)
    runs = losses_with_and_without(td.main, ["--base", str(base), "--data_path", str(data), "--max_steps", "4",
                                             "--val_ratio", "0", "--learning_rate", "1e-3", *FAST],
                                   "--compile", tmp_path, "dpo_64")
    eager, compiled = runs[False][0], runs[True][0]
    assert len(compiled) == 4 and abs(eager[-1] - 0.6931) > 1e-3     # the policy moved
    assert compiled == pytest.approx(eager, rel=1e-3)


def test_without_a_compiler_one_warning_and_eager(tmp_path):
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=20)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "CXX": str(tmp_path / "no-such-c++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, os.path.join(root, "trainer", "train_full_sft.py"), "--base", str(base),
                           "--data_path", str(data), "--out_dir", str(tmp_path / "out"), "--max_steps", "2",
                           "--batch_size", "4", "--dtype", "float32", "--device", "cpu", "--compile"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    warned = [l for l in done.stderr.splitlines() if "--compile: torch.compile does not work here" in l]
    assert len(warned) == 1 and "C++ compiler" in warned[0]
    assert "compile: off (torch.compile failed here; eager)" in done.stdout
    assert (tmp_path / "out" / "full_sft_64.pth").is_file()

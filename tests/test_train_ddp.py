"""DDP: 2 gloo processes through torchrun train identical parameters on both ranks, and the same weights
(within float tolerance) as one process with the same global batch (batch 2 x accumulation 2 vs 2 x 2).

    pytest tests/test_train_ddp.py
"""
import torch

from factories import FAST, REPO, make_checkpoint, run_python, write_chat
from checkpoint.pth import load_checkpoint

# runs trainer/train_full_sft.py and dumps each rank's trained parameters
SPY = """
import os, sys, torch
sys.path.insert(0, {repo!r})
import trainer.stage as stage
import {module} as ts
orig = stage.train
def spy(cfg, model, *a, **k):
    path = orig(cfg, model, *a, **k)
    torch.save({{n: p.detach().cpu() for n, p in model.named_parameters()}},
               os.path.join({dump!r}, "rank%s.pt" % os.environ.get("RANK", "0")))
    return path
stage.train = spy
from core.cli import run_cli
run_cli(ts.main, sys.argv[1:])
"""


def ddp_and_single(tmp_path, module, args):
    """The spy run twice: 2 gloo processes through torchrun, and one process with --accumulation_steps 2
    -> {"ddp": folder, "single": folder} (each with out/ and rank*.pt)."""
    spy, outs = tmp_path / "spy.py", {}
    for name, launcher, extra in (
            ("ddp", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], []),
            ("single", [], ["--accumulation_steps", "2"])):
        dump = tmp_path / name
        dump.mkdir()
        spy.write_text(SPY.format(repo=str(REPO), dump=str(dump), module=module))
        run_python([*launcher, str(spy), *args, *extra, "--out_dir", str(dump / "out")], cwd=REPO)
        outs[name] = dump
    return outs


def test_two_gloo_processes_match_one_process(tmp_path):
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=16)
    args = ["--base", str(base), "--data_path", str(data), "--val_ratio", "0", "--max_steps", "4", *FAST,
            "--batch_size", "2", "--learning_rate", "1e-3"]
    outs = ddp_and_single(tmp_path, "trainer.train_full_sft", args)
    r0 = torch.load(outs["ddp"] / "rank0.pt", weights_only=True)
    r1 = torch.load(outs["ddp"] / "rank1.pt", weights_only=True)
    single = torch.load(outs["single"] / "rank0.pt", weights_only=True)
    saved = load_checkpoint(outs["ddp"] / "out" / "full_sft_64.pth")["model"]
    changed = False
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ at {k}"
        torch.testing.assert_close(r0[k], single[k], rtol=1e-4, atol=2e-6, msg=k)
        torch.testing.assert_close(saved[k], r0[k], rtol=0, atol=0, msg=k)
        changed |= not torch.equal(r0[k], load_checkpoint(base)["model"][k])
    assert changed


def test_grpo_on_two_gloo_processes_matches_one_process(tmp_path):
    """GRPO: a prompt's completions are seeded by the prompt, not by the process that samples them, and the
    loss's denominators (and --scale_rewards batch's std) are the whole step's: 2 processes x 2 prompts give
    one process's 2 x 2 accumulated (rewards and weights)."""
    import json
    base = make_checkpoint(tmp_path / "base.pth", std=0.02)
    (tmp_path / "toy.py").write_text("def ascii_share(completions, records):\n"
                                     "    return [sum(c.isascii() and c.isalpha() for c in t) / max(1, len(t)) for t in completions]\n")
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"conversations": [{"role": "user", "content": f"tell me {i}"}]}) + "\n"
                            for i in range(16)))
    args = ["--base", str(base), "--data_path", str(data), "--val_ratio", "0", "--max_steps", "3", "--batch_size", "2",
            "--reward", f"{tmp_path / 'toy.py'}:ascii_share", "--max_new_tokens", "6", "--learning_rate", "1e-3",
            "--scale_rewards", "batch", "--device", "cpu", "--dtype", "float32", "--log_interval", "1"]
    outs = ddp_and_single(tmp_path, "trainer.train_grpo", args)
    rows = {name: [json.loads(x) for x in (d / "out" / "logs" / "grpo_64.jsonl").read_text().splitlines()]
            for name, d in outs.items()}
    rewards = {name: [r["reward"] for r in rs if "reward" in r] for name, rs in rows.items()}
    assert rewards["ddp"] == __import__("pytest").approx(rewards["single"], abs=1e-6) and len(rewards["ddp"]) == 3
    r0 = torch.load(outs["ddp"] / "rank0.pt", weights_only=True)
    r1 = torch.load(outs["ddp"] / "rank1.pt", weights_only=True)
    single = torch.load(outs["single"] / "rank0.pt", weights_only=True)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ at {k}"
        # Adam's steps of 1e-3 on gradients summed in another order (and rows packed with other
        # prompts): differences of a few 1e-6
        torch.testing.assert_close(r0[k], single[k], rtol=1e-4, atol=3e-5, msg=k)

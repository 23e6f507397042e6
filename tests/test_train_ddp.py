"""DDP: 2 gloo processes through torchrun train identical parameters on both ranks, and the same weights
(within float tolerance) as one process with the same global batch (batch 2 x accumulation 2 vs 2 x 2).

    pytest tests/test_train_ddp.py
"""
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_train_stages import FAST, REPO, make_base, write_chat  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402

# runs trainer/train_full_sft.py and dumps each rank's trained parameters
SPY = """
import os, sys, torch
sys.path.insert(0, {repo!r})
import trainer.train_full_sft as ts
orig = ts.train
def spy(cfg, model, *a, **k):
    path = orig(cfg, model, *a, **k)
    torch.save({{n: p.detach().cpu() for n, p in model.named_parameters()}},
               os.path.join({dump!r}, "rank%s.pt" % os.environ.get("RANK", "0")))
    return path
ts.train = spy
from model.errors import run_cli
run_cli(ts.main, sys.argv[1:])
"""


def test_two_gloo_processes_match_one_process(tmp_path):
    base = make_base(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=16)
    spy = tmp_path / "spy.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--base", str(base), "--data_path", str(data), "--val_ratio", "0", "--max_steps", "4", *FAST,
            "--batch_size", "2", "--learning_rate", "1e-3"]
    outs = {}
    for name, launcher, extra in (
            ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], []),
            ("single", [sys.executable], ["--accumulation_steps", "2"])):
        dump = tmp_path / name
        dump.mkdir()
        spy.write_text(SPY.format(repo=str(REPO), dump=str(dump)))
        r = subprocess.run([*launcher, str(spy), *args, *extra, "--out_dir", str(dump / "out")], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        outs[name] = dump
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

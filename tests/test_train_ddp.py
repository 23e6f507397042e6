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
import trainer.train_full_sft as ts
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


def test_two_gloo_processes_match_one_process(tmp_path):
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=16)
    spy = tmp_path / "spy.py"
    args = ["--base", str(base), "--data_path", str(data), "--val_ratio", "0", "--max_steps", "4", *FAST,
            "--batch_size", "2", "--learning_rate", "1e-3"]
    outs = {}
    for name, launcher, extra in (
            ("ddp", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], []),
            ("single", [], ["--accumulation_steps", "2"])):
        dump = tmp_path / name
        dump.mkdir()
        spy.write_text(SPY.format(repo=str(REPO), dump=str(dump)))
        run_python([*launcher, str(spy), *args, *extra, "--out_dir", str(dump / "out")], cwd=REPO)
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

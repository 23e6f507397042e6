"""Exact resume: a run stopped at step k and resumed with --resume ends with the same weights as an
uninterrupted run (model, optimizer, scaler, schedule, RNG and data position restored). CPU, tiny model.

    pytest tests/test_train_resume.py
"""
import json
import shutil

import pytest
import torch

from factories import FAST, make_checkpoint, write_chat
from checkpoint.pth import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("stage", ["full_sft", "lora"])
def test_resume_equals_uninterrupted(tmp_path, stage):
    import trainer.train_full_sft as ts
    import trainer.train_lora as tl
    main, extra = (ts.main, []) if stage == "full_sft" else (tl.main, ["--lora_dropout", "0.1", "--lora_name", "r"])
    base = make_checkpoint(tmp_path / "base.pth", dropout=0.1)          # dropout: the RNG state matters
    data = write_chat(tmp_path / "chat.jsonl", n=26)
    a, b = tmp_path / "a", tmp_path / "b"
    # 24 training samples, batch 2 x accumulation 2: 6 steps per epoch; 10 steps cross an epoch boundary
    args = ["--base", str(base), "--data_path", str(data), "--max_steps", "10", "--save_interval", "4",
            "--keep_last", "2", "--accumulation_steps", "2", *FAST, "--batch_size", "2", "--val_ratio", "0.08",
            *extra]
    main(args + ["--out_dir", str(a)])
    run = "full_sft_64" if stage == "full_sft" else "r_64"
    states = sorted(p.name for p in (a / "state" / run).glob("step_*.pth"))
    assert states == ["step_4.pth", "step_8.pth"]
    # "stop" at step 4 (mid-epoch): a fresh folder holding only the state of step 4, then resume
    (b / "state" / run).mkdir(parents=True)
    shutil.copy(a / "state" / run / "step_4.pth", b / "state" / run / "step_4.pth")
    main(args + ["--out_dir", str(b), "--resume"])
    rows = [json.loads(x) for x in (b / "logs" / f"{run}.jsonl").read_text().splitlines()]
    assert rows[0]["config"]["resume"] is True and rows[0]["step"] == 4     # the log opens with what ran
    steps = [r["step"] for r in rows[1:]]
    assert min(steps) == 5 and max(steps) == 10, steps          # it really continued from step 4

    if stage == "full_sft":
        wa, wb = load_checkpoint(a / "full_sft_64.pth")["model"], load_checkpoint(b / "full_sft_64.pth")["model"]
    else:
        wa = torch.load(a / "lora" / "r_64.pth", weights_only=True)["lora"]
        wb = torch.load(b / "lora" / "r_64.pth", weights_only=True)["lora"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=k)

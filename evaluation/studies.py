"""The comparison studies: what each arm of each study trains, as the trainer command it runs. Every arm of
a study starts from the same base with the same data, seed and --max_minutes; only its own flags differ.
scripts/study.py runs them, scores them on the same tasks and writes one report.

    python scripts/study.py --study loss_on --dry_run            # the arms' commands, nothing run
    from evaluation.studies import STUDIES, arm_command, arm_output
    cmd = arm_command(STUDIES["loss_on"].arms[1], base, data, arm_dir, minutes=12, seed=42)

An arm's outputs go to its own out folder, out/study/{study}/{arm}/ (the trainer's layout inside it:
lora/{arm}_{hidden}.pth or full_sft_{hidden}.pth, logs/, state/), so the user's out/ is never touched.
"""
import os
from dataclasses import dataclass
from pathlib import Path

from model import paths

LORA, FULL = "trainer/train_lora.py", "trainer/train_full_sft.py"
SYSTEM = "You are a helpful assistant."
RANKS = (4, 8, 16, 64)
EPOCHS = 5                             # the README command's; the time budget usually ends the run first
DEFAULT_STUDY = "forgetting"


@dataclass(frozen=True)
class Arm:
    name: str                          # the table's column; its folder out/study/{study}/{name}
    what: str                          # one line for the dry run and the summary
    script: object = LORA              # the trainer it runs; None: no training, the base itself is scored
    flags: tuple = ()                  # what this arm adds to the flags every arm shares


@dataclass(frozen=True)
class Study:
    name: str
    question: str                      # what the study answers, for its summary
    arms: tuple
    note: str = ""                     # how to read its results


STUDIES = {s.name: s for s in (
    Study("forgetting", "Does the LoRA make the base forget what it knew? The base is scored before and after.",
          (Arm("base", "the base as it is (no training)", None),
           Arm("lora", "LoRA with the README command's settings (rank 8, alpha 16, lr 1e-3, batch 16)"))),
    Study("loss_on", "Loss on the replies only, or on every token of the conversation?",
          (Arm("assistant", "LoRA, --loss_on assistant (the default)", LORA, ("--loss_on", "assistant")),
           Arm("all", "LoRA, --loss_on all", LORA, ("--loss_on", "all"))),
          "each arm's validation loss is over the tokens it trains on (every token for 'all'): compare the "
          "scores, not the losses."),
    Study("system_prompt", f"Does training with a system prompt ({SYSTEM!r}) change what the LoRA learns?",
          (Arm("no_system", "LoRA without a system prompt (the default)"),
           Arm("system", f"LoRA, --system_prompt {SYSTEM!r}", LORA, ("--system_prompt", SYSTEM))),
          "the tests ask every arm without a system prompt."),
    Study("lora_vs_full", "LoRA or full fine-tuning (every weight trains) in the same time?",
          (Arm("lora", "LoRA rank 8, lr 1e-3 (train_lora.py's defaults)"),
           Arm("full", "full SFT, lr 1e-4 (train_full_sft.py's default; 1e-3 would wreck every weight)", FULL))),
    Study("lora_rank", "Which LoRA rank? Alpha is 2 x rank throughout, so the scaling alpha/r stays 2.",
          tuple(Arm(f"rank{r}", f"LoRA --lora_rank {r} --lora_alpha {2 * r}", LORA,
                    ("--lora_rank", r, "--lora_alpha", 2 * r)) for r in RANKS)),
)}


def shown(path):
    """A path as commands show it: relative to the repository root (where the arms run) when inside it."""
    p = Path(path).resolve()
    root = paths.repo_root()
    return os.path.relpath(p, root) if root in p.parents else str(p)


def arm_command(arm, base, data, arm_dir, minutes, seed, device="", max_steps=0):
    """The trainer command of an arm (as run from the repository root; "python" is the running one), or
    None for an arm that does not train. Shared by every arm: --base, --data_path, --epochs, --seed,
    --max_minutes, --out_dir (the arm's own folder)."""
    if arm.script is None:
        return None
    cmd = ["python", arm.script, "--base", shown(base), "--data_path", shown(data), "--epochs", EPOCHS,
           "--seed", seed, "--max_minutes", f"{minutes:g}", "--out_dir", shown(arm_dir)]
    cmd += ["--lora_name", arm.name] if arm.script == LORA else []
    cmd += ["--device", device] if device else []
    cmd += ["--max_steps", max_steps] if max_steps else []
    return [str(c) for c in cmd + list(arm.flags)]


def arm_output(arm, base, arm_dir, config):
    """The model file an arm's run leaves (config: the base's, a dict): its adapter, its full-SFT
    checkpoint, or the base itself for an arm that does not train."""
    hidden, moe = config["hidden_size"], config.get("use_moe", False)
    if arm.script is None:
        return Path(base)
    if arm.script == FULL:
        return paths.checkpoint_path(arm_dir, "full_sft", hidden, moe)
    return paths.adapter_path(arm_dir, arm.name, hidden, moe)

"""The comparison studies: what each arm of each study trains, as the trainer command it runs. Every arm of
a study starts from the same base with the same data, seed and --max_minutes; only its own flags differ.
scripts/study.py runs them, scores them on the same tasks and writes one report.

    python scripts/study.py --study loss_on --dry_run            # the arms' commands, nothing run
    from pipelines.study_arms import STUDIES, arm_command, arm_output
    cmd = arm_command(STUDIES["loss_on"].arms[1], base, data, arm_dir, minutes=12, seed=42)

An arm's outputs go to its own out folder, out/study/{study}/{arm}/ (the trainer's layout inside it:
lora/{arm}_{hidden}.pth or full_sft_{hidden}.pth, logs/, state/), so the user's out/ is never touched.
An arm may train on its own share of the data (Arm.data): the study's prepare_commands write those files
into out/study/{study}/data/ before any arm trains (the ifd study: Cherry selection by scripts/select_data.py).
"""
import os
from dataclasses import dataclass
from pathlib import Path

from checkpoint import layout
from selection.select import cherry_paths
from trainer.args import parse_args
from trainer.lora_flags import check_lora_flags
from trainer.stage import check_model_flags

LORA, FULL, DPO = "trainer/train_lora.py", "trainer/train_full_sft.py", "trainer/train_dpo.py"
SELECT = "scripts/select_data.py"
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
    data: str = ""                     # "": the study's --data_path; else its prepared share, data/{data}.jsonl
    then: tuple = None                 # a DPO stage after it (its flags): train_dpo.py --from_lora on --pairs
    share: float = 1.0                 # with then: the first stage's share of --max_steps (DPO takes the rest)


@dataclass(frozen=True)
class Study:
    name: str
    question: str                      # what the study answers, for its summary
    arms: tuple
    note: str = ""                     # how to read its results
    base: str = "lora"                 # the default base: "lora" (train_lora.py's), "pretrain" (a pretrained one)
    defaults: tuple = ()               # (flag, value) of study.py's flags that differ for this study
    file_identity: bool = False        # no arm is taught an identity: hold them to the one the test file asks for


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
    Study("ifd", "Does full SFT on the top share of the data by IFD (Cherry selection) beat a random share of "
          "the same size, the bottom share, and all of the data, in the same number of steps?",
          (Arm("top", "full SFT on the top --ratio by IFD (the scorer: --scorer, else Cherry's, the base after "
                      "a brief SFT on a clustered sample)", FULL, data="top"),
           Arm("random", "full SFT on as many samples drawn at random", FULL, data="random"),
           Arm("bottom", "full SFT on as many with the lowest IFD", FULL, data="bottom"),
           Arm("all", "full SFT on every sample", FULL)),
          "every arm runs the same --max_steps from the same pretrained base, so the small shares repeat "
          "their samples; validation loss is on the same --val_data for every arm.",
          base="pretrain", defaults=(("data_path", "dataset/sft.jsonl"), ("val_data", "dataset/sft_val.jsonl"),
                                     ("max_steps", 600), ("minutes", 60.0), ("gen", "music,identity")),
          file_identity=True),
    Study("dpo", "Does DPO after the LoRA beat the LoRA alone, in the same number of steps?",
          (Arm("lora", "LoRA for every one of --max_steps (train_lora.py's defaults)"),
           Arm("lora_dpo", "LoRA for 3/4 of --max_steps, then sigmoid DPO (beta 0.1) of that adapter "
                           "(--from_lora) on --pairs for the rest", then=(), share=0.75)),
          "a DPO step takes 8 pairs (16 answers) where a LoRA step takes 16 conversations; both arms end "
          "after the same number of optimizer steps (each stage may take --minutes: give a budget the steps "
          "fit in, or the arms differ).",
          defaults=(("max_steps", 160), ("minutes", 30.0))),
)}


def shown(path):
    """A path as commands show it: relative to the repository root (where the arms run) when inside it."""
    p = Path(path).resolve()
    root = layout.repo_root()
    return os.path.relpath(p, root) if root in p.parents else str(p)


def arm_data(arm, data, folder):
    """The file an arm trains on: the study's data, or its share prepared in the study folder."""
    return Path(folder) / "data" / f"{arm.data}.jsonl" if arm.data else Path(data)


def arm_command(arm, base, data, arm_dir, minutes, seed, device="", max_steps=0, val_data="", max_seq_len=0):
    """The trainer command of an arm (as run from the repository root; "python" is the running one), or
    None for an arm that does not train. Shared by every arm: --base, --epochs, --seed, --max_minutes and
    what is given of --device, --max_steps, --val_data, --max_seq_len; its own: --data_path (data: the
    arm's file, arm_data) and --out_dir (the arm's own folder)."""
    if arm.script is None:
        return None
    cmd = ["python", arm.script, "--base", shown(base), "--data_path", shown(data), "--epochs", EPOCHS,
           "--seed", seed, "--max_minutes", f"{minutes:g}", "--out_dir", shown(arm_dir)]
    cmd += ["--lora_name", first_name(arm)] if arm.script == LORA else []
    cmd += ["--device", device] if device else []
    cmd += ["--max_steps", stage_steps(arm, max_steps)[0]] if max_steps else []
    cmd += ["--val_data", shown(val_data)] if val_data else []
    cmd += ["--max_seq_len", max_seq_len] if max_seq_len else []
    return [str(c) for c in cmd + list(arm.flags)]


def first_name(arm):
    """The adapter name of an arm's LoRA stage: the arm's, or {arm}_lora when a DPO stage follows (the
    arm's name is then the DPO stage's adapter)."""
    return arm.name if arm.then is None else f"{arm.name}_lora"


def stage_steps(arm, max_steps):
    """(first stage's --max_steps, the DPO stage's) of an arm; an arm without a DPO stage takes them all."""
    first = max_steps if arm.then is None else min(max_steps - 1, max(1, round(arm.share * max_steps)))
    return first, max_steps - first


def then_command(arm, first_output, pairs, arm_dir, minutes, seed, device="", max_steps=0, max_seq_len=0):
    """The DPO stage of an arm with one (Arm.then), or None: train_dpo.py continuing the first stage's
    adapter (--from_lora) on the pairs, for the steps the first stage left, into the arm's folder."""
    if arm.then is None:
        return None
    cmd = ["python", DPO, "--from_lora", shown(first_output), "--lora_name", arm.name, "--data_path",
           shown(pairs), "--seed", seed, "--max_minutes", f"{minutes:g}", "--out_dir", shown(arm_dir),
           "--max_steps", stage_steps(arm, max_steps)[1]]
    cmd += ["--device", device] if device else []
    cmd += ["--max_seq_len", max_seq_len] if max_seq_len else []
    return [str(c) for c in cmd + list(arm.then)]


def check_arm(arm, cmd, base, config):
    """The trainer's own checks of an arm's command (run from make_plan, before any arm trains, and so in a
    dry run too): its flags (trainer.args.parse_args), their fit to the base (trainer.stage.check_model_flags:
    the window) and, for a LoRA arm, its LoRA settings against the base's layers (trainer.lora_flags.check_lora_flags:
    a rank above a layer's width, an unknown target). config: the base's ModelConfig."""
    stage = {LORA: "lora", FULL: "full_sft", DPO: "dpo"}[cmd[1]]
    cfg = parse_args(stage, cmd[2:])
    check_model_flags(cfg, config, base)
    if stage == "lora" or (stage == "dpo" and not cfg.from_lora):
        check_lora_flags(cfg, config)


def prepare_commands(study, base, data, folder, samples, count, seed, max_length, device="", scorer="",
                     scorer_dtype="float32"):
    """The commands that write the arms' own shares (Arm.data) into {folder}/data/, in order -> [(step,
    command)]; [] for a study whose arms all train on its data. The ifd study's: the IFD scores and the top
    count, then the bottom count and a random draw of count (from every sample, --keep_above_one) from the
    same scores. The scores: Cherry's way, `select_data.py cherry` (cluster into Cherry's 100 clusters, fewer
    for fewer than 1,000 samples; a brief SFT of the base on 10 of each; IFD of every sample with it), or
    with scorer (any --ckpt of select_data.py: Superfiltering's way, another model scores) at scorer_dtype."""
    shares = [a.data for a in study.arms if a.data]
    if not shares:
        return []
    if shares != ["top", "random", "bottom"]:
        raise ValueError(f"study {study.name}: no recipe for the shares {shares}")
    out = {s: shown(Path(folder) / "data" / f"{s}.jsonl") for s in shares}
    on_device = ["--device", device] if device else []
    common = ["--data_path", shown(data), "--count", count]
    if scorer:
        scores = shown(Path(folder) / "data" / "scores.jsonl")
        first = [("scores", ["python", SELECT, "score", "--data_path", shown(data), "--ckpt", scorer, "--max_length",
                             max_length, "--dtype", scorer_dtype, "-o", scores] + on_device)]
    else:
        scores = shown(cherry_paths(Path(folder) / "data" / "top.jsonl")[2])      # where cherry leaves them
        first = []
    pick = ["python", SELECT, "select", *common, "--scores", scores]
    top = pick + ["-o", out["top"]] if scorer else \
        ["python", SELECT, "cherry", *common, "--ckpt", shown(base), "--k", max(1, min(100, samples // 10)),
         "--seed", seed, "--max_length", max_length, "-o", out["top"]] + on_device
    cmds = first + [("top", top), ("bottom", pick + ["--pick", "bottom", "-o", out["bottom"]]),
                    ("random", pick + ["--pick", "random", "--keep_above_one", "--seed", seed, "-o", out["random"]])]
    return [(step, [str(c) for c in cmd]) for step, cmd in cmds]


def step_output(folder, step):
    """The file a prepare step leaves in {folder}/data/: the scores file, or a share (whose stats are beside)."""
    return Path(folder) / "data" / ("scores.jsonl" if step == "scores" else f"{step}.jsonl")


def arm_output(arm, base, arm_dir, config, first=False):
    """The model file an arm's run leaves (config: the base's, a dict): its adapter (after its DPO stage if
    it has one; first: its first stage's), its full-SFT checkpoint, or the base for an arm that does not train."""
    hidden, moe = config["hidden_size"], config.get("use_moe", False)
    if arm.script is None:
        return Path(base)
    if arm.script == FULL:
        return layout.checkpoint_path(arm_dir, "full_sft", hidden, moe)
    return layout.adapter_path(arm_dir, first_name(arm) if first else arm.name, hidden, moe)

"""Training configuration: one dataclass, a comment per field, turned into argparse flags of the same names.

Library module, used by the entry points:
    from trainer.args import parse_args
    cfg = parse_args("lora")          # python trainer/train_lora.py --help lists the flags

Paths follow checkpoint/layout.py: an input is found relative to the current folder, else to trainer/ (so
`--data_path ../dataset/music.jsonl` works from the repository root and from inside trainer/); outputs go
to --out_dir, else $TINYMIND_OUT_DIR, else <repo>/out, whatever the current folder.
"""
import argparse
import inspect
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from core.cli import ArgumentParser, check_device, check_range
from checkpoint import layout
from core.errors import UserError
from model.lora import DEFAULT_TARGETS
from inference.precision import PRECISIONS, cpu_has_bf16

ALL = ("pretrain", "full_sft", "lora", "dpo", "grpo")
CHAT = ("full_sft", "lora", "dpo", "grpo")
LORA_STAGES = ("lora", "dpo", "grpo")      # dpo, grpo: a LoRA when --lora_name is given, else full fine-tuning
LORA_TARGETS = ",".join(DEFAULT_TARGETS)


@dataclass
class TrainConfig:
    # data
    data_path: str = ""                  # training JSONL (relative: to the current dir, else to trainer/)
    val_data: str = ""                   # validation JSONL; empty = hold out --val_ratio of --data_path
    val_ratio: float = 0.05              # fraction of the training file held out for validation (0 = none)
    max_seq_len: int = 512               # tokens per sample (pretrain: packed window length)
    skip_bad: bool = False               # skip and count malformed lines instead of stopping at the first
    padding: str = "dynamic"             # dynamic: pad to the batch's longest sample; max_length: to max_seq_len
    group_by_length: bool = False        # batch samples of similar length together (less padding; HF's group_by_length)
    loss_on: str = "assistant"           # assistant: loss on replies only; all: on every token
    system_prompt: str = ""              # system message added to conversations that have none
    # model
    preset: str = "small"                # model preset for pretraining: tiny, small, base, moe
    tokenizer: str = ""                  # tokenizer.model for pretraining; empty = tokenizer/tokenizer.model
    hidden_size: int = 0                 # pretrain: model width (0 = preset's); fine-tuning: picks the base file
    num_hidden_layers: int = 0           # pretrain: number of blocks (0 = preset's); fine-tuning: checks the base
    use_moe: bool = False                # pretrain: mixture-of-experts MLP; fine-tuning: picks the *_moe base file
    base: str = ""                       # checkpoint to start from; empty = out/{previous stage}_{hidden}.pth
    # LoRA
    lora_name: str = "lora_music"        # adapter name: saved as out/lora/{lora_name}_{hidden}.pth
    lora_rank: int = 8                   # LoRA rank r
    lora_alpha: float = 16.0             # LoRA alpha; scaling = alpha / r (alpha / sqrt(r) with rsLoRA)
    lora_dropout: float = 0.0            # dropout on the LoRA branch input
    lora_targets: str = LORA_TARGETS     # comma list of linear-layer names to adapt
    use_rslora: bool = False             # rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski 2023)
    # distillation (full_sft, lora)
    teacher: str = ""                    # a model to distil from (a name in out/, a .pth, an HF folder, a .gguf); same tokenizer
    alpha: float = 0.5                   # with --teacher: the share of cross-entropy in the loss; the rest is T^2 * KL(teacher || student)
    temperature: float = 1.0             # with --teacher: the softmax temperature T of the distillation term; grpo: of the sampling
    teacher_dtype: str = "float32"       # the teacher's precision: float32, bfloat16, float16 or int8
    # preference training (train_dpo.py) and reinforcement learning (train_grpo.py)
    loss_type: str = "sigmoid"           # dpo: sigmoid (DPO), ipo, or simpo (reference-free); grpo: grpo, dapo, dr_grpo or cispo
    beta: float = 0.0                    # dpo: the loss's beta, 0 = 0.1 (sigmoid, ipo) or 2.0 (simpo); grpo: the KL weight, 0 = no reference
    label_smoothing: float = 0.0         # conservative DPO: the assumed share of flipped pairs (sigmoid, simpo)
    simpo_gamma: float = 0.5             # SimPO's target reward margin gamma
    rpo_alpha: float = 0.0               # weight of an SFT term on the chosen answers (RPO); 0 = off
    precompute_ref: bool = False         # compute the reference log-probabilities once before training (kept with the run's states)
    from_lora: str = ""                  # continue this adapter (a name in out/lora or a .pth) on the base it records; the reference is the adapter as it starts
    # reinforcement learning (train_grpo.py)
    reward: str = "arithmetic"           # NAME[:weight] (answer, identity, arithmetic, format, length) or module:function[:weight]; repeat the flag for several
    num_generations: int = 8             # completions sampled per prompt (the group G)
    max_new_tokens: int = 64             # the longest completion, in tokens
    epsilon: float = 0.2                 # the clip of the ratio below 1 (grpo, dapo, dr_grpo)
    epsilon_high: float = 0.0            # the clip above 1 (cispo: of the ratio itself); 0 = --epsilon (cispo: 5.0)
    scale_rewards: str = "group"         # divide the advantages by the std of the group, of the batch, or none
    num_iterations: int = 1              # optimizer steps on each rollout (the old policy's log-probabilities: as sampled)
    dynamic_sampling: bool = False       # sample a prompt again (up to 3 times) when its group's rewards are all equal; drop it if they stay so
    # optimisation
    epochs: int = 1                      # passes over the training data
    max_steps: int = 0                   # optimizer steps to run; > 0 overrides --epochs (data repeats)
    max_minutes: float = 0.0             # stop training (and save) after this many minutes of steps; 0 = no limit
    batch_size: int = 16                 # samples per micro-batch per process
    accumulation_steps: int = 1          # micro-batches per optimizer step
    learning_rate: float = 5e-4          # peak learning rate (after warmup; cosine decay to 10% of it); dpo: 0 = 5e-6, with --lora_name 5e-5
    weight_decay: float = 0.1            # AdamW decay on matrices only (not on norms and biases)
    warmup_iters: int = -1               # linear warmup steps; -1 = 3% of the run's steps
    grad_clip: float = 1.0               # clip the global gradient norm to this (0 = off)
    seed: int = 42                       # seed for initialisation, data order and the validation split
    # hardware
    device: str = ""                     # cpu, cuda, cuda:1; empty = cuda when available (torchrun: LOCAL_RANK)
    dtype: str = "auto"                  # auto = bfloat16 where the CUDA device or the CPU (AVX512-BF16/AMX) has it, else float16 on CUDA, float32 on CPU
    num_workers: int = 0                 # DataLoader worker processes
    threads: int = 0                     # torch threads; 0 = OMP_NUM_THREADS, else every core
    gradient_checkpointing: bool = False  # recompute each block in backward instead of keeping its activations (less memory, ~1/3 more compute)
    compile: bool = False                # compile each block with torch.compile (first steps slower while it compiles; eager with a warning where it cannot)
    ddp_timeout: int = 600               # seconds a DDP process waits for a stuck one before the job stops
    # outputs
    out_dir: str = ""                    # output folder; empty = $TINYMIND_OUT_DIR, else <repo>/out
    log_interval: int = 10               # log a line every this many steps
    eval_interval: int = 100             # validation loss every this many steps (and at the end; 0 = end only)
    eval_batches: int = 50               # at most this many validation batches per evaluation (0 = all)
    save_interval: int = 500             # save the checkpoint and a resumable state every this many steps
    keep_last: int = 2                   # training states kept in out/state/{run}/ (older ones deleted)
    resume: bool = False                 # continue from the newest state in out/state/{run}/ if there is one
    use_wandb: bool = False              # log the same metrics to Weights & Biases (files under out/wandb)
    wandb_project: str = "TinyMind"      # W&B project name

    def to_dict(self):
        return asdict(self)


# flags that exist only for some stages (the rest exist for all)
ONLY = {"loss_on": ("full_sft", "lora"), "system_prompt": CHAT, "base": CHAT, "padding": CHAT[:3],
        "group_by_length": CHAT[:3], "preset": ("pretrain",), "tokenizer": ("pretrain",),
        **{f: LORA_STAGES for f in ("lora_name", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets",
                                    "use_rslora")},
        **{f: ("full_sft", "lora") for f in ("teacher", "alpha", "teacher_dtype")},
        "temperature": ("full_sft", "lora", "grpo"), "loss_type": ("dpo", "grpo"), "beta": ("dpo", "grpo"),
        **{f: ("dpo",) for f in ("label_smoothing", "simpo_gamma", "rpo_alpha", "precompute_ref", "from_lora")},
        **{f: ("grpo",) for f in ("reward", "num_generations", "max_new_tokens", "epsilon", "epsilon_high",
                                  "scale_rewards", "num_iterations", "dynamic_sampling")}}
# the --loss_type of each stage that has one
LOSS_TYPES = {"dpo": ("sigmoid", "ipo", "simpo"), "grpo": ("grpo", "dapo", "dr_grpo", "cispo")}
CHOICES = {"loss_on": ("assistant", "all"), "padding": ("dynamic", "max_length"),
           "loss_type": LOSS_TYPES["dpo"] + LOSS_TYPES["grpo"], "teacher_dtype": PRECISIONS,
           "scale_rewards": ("group", "batch", "none"),
           "dtype": ("auto", "bfloat16", "float16", "float32"), "preset": ("tiny", "small", "base", "moe")}
# MiniMind-like defaults per stage
STAGE_DEFAULTS = {
    "pretrain": dict(data_path="../dataset/pretrain.jsonl", batch_size=32, learning_rate=5e-4, epochs=1),
    "full_sft": dict(data_path="../dataset/sft.jsonl", val_data="../dataset/sft_val.jsonl", batch_size=16,
                     learning_rate=1e-4, epochs=2),
    "lora": dict(data_path="../dataset/music.jsonl", batch_size=16, learning_rate=1e-3, epochs=5, group_by_length=True),
    # learning_rate 0: resolved by preference_defaults (a LoRA takes a larger one than full fine-tuning)
    "dpo": dict(data_path="../dataset/music_pairs.jsonl", batch_size=8, learning_rate=0.0, epochs=2, lora_name="",
                eval_interval=50),
    # batch_size: prompts per micro-batch (each sampled --num_generations times)
    "grpo": dict(data_path="../dataset/arithmetic.jsonl", val_data="../dataset/arithmetic_test.jsonl", batch_size=2,
                 learning_rate=0.0, epochs=1, lora_name="", loss_type="dapo", beta=0.0, temperature=0.7,
                 max_seq_len=256, eval_interval=20, eval_batches=16, log_interval=1, save_interval=10),
}
# what learning_rate 0 and beta 0 of a DPO run resolve to (docs/training.md, "Preference training")
DPO_LR = {"full": 5e-6, "lora": 5e-5}
GRPO_LR = {"full": 1e-6, "lora": 1e-4}          # a GRPO run's learning_rate 0 (docs/training.md, "GRPO")
DPO_BETA = {"sigmoid": 0.1, "ipo": 0.1, "simpo": 2.0}


def rl_defaults(cfg):
    """A GRPO run's learning rate (0: by full or LoRA) and epsilon_high (0: --epsilon, cispo 5.0), in place."""
    if not cfg.learning_rate:
        cfg.learning_rate = GRPO_LR["lora" if cfg.lora_name else "full"]
    if not cfg.epsilon_high:
        cfg.epsilon_high = 5.0 if cfg.loss_type == "cispo" else cfg.epsilon
    return cfg


def preference_defaults(cfg):
    """A DPO run's learning rate and beta where the flags leave them at 0 (their defaults), in place."""
    if not cfg.learning_rate:
        cfg.learning_rate = DPO_LR["lora" if cfg.lora_name else "full"]
    if not cfg.beta:
        cfg.beta = DPO_BETA[cfg.loss_type]
    return cfg


def field_comments():
    """{field name: its trailing comment} read from the TrainConfig source: the comments are the help."""
    src = inspect.getsource(TrainConfig)
    return dict(re.findall(r"^\s+(\w+): \w+ = .*?#\s*(.+)$", src, flags=re.M))


def build_parser(stage, description=None):
    ap = ArgumentParser(description=description,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    helps, defaults = field_comments(), {**TrainConfig().to_dict(), **STAGE_DEFAULTS[stage]}
    for f in fields(TrainConfig):
        if stage not in ONLY.get(f.name, ALL):
            continue
        default, kw = defaults[f.name], dict(help=helps.get(f.name, "").replace("%", "%%"))
        if f.type in (bool, "bool"):
            # real booleans: --use_wandb sets it, --no_use_wandb clears it (listed when the default is on)
            ap.add_argument(f"--{f.name}", action="store_true", default=default, **kw)
            ap.add_argument(f"--no_{f.name}", dest=f.name, action="store_false",
                            help=f"turn --{f.name} off" if default else argparse.SUPPRESS)
        elif f.name == "reward":
            ap.add_argument("--reward", action="append", default=None, **kw)
        else:
            typ = {"int": int, "float": float, "str": str}.get(f.type, f.type) if isinstance(f.type, str) else f.type
            ap.add_argument(f"--{f.name}", type=typ, default=default, choices=CHOICES.get(f.name), **kw)
    return ap


def parse_args(stage, argv=None, description=None):
    """Flags -> TrainConfig for one stage (fields a stage does not use keep their defaults)."""
    ns = build_parser(stage, description).parse_args(argv)
    if stage == "grpo":                 # --reward is repeatable: kept as one comma list
        ns.reward = ",".join(ns.reward) if ns.reward else STAGE_DEFAULTS["grpo"].get("reward", TrainConfig.reward)
    cfg = TrainConfig(**{**STAGE_DEFAULTS[stage], **vars(ns)})
    if stage == "dpo":
        preference_defaults(cfg)
    if stage == "grpo":
        rl_defaults(cfg)
    check_flags(cfg, stage)
    return resolve_config(cfg, stage)


# the lowest value of each numeric flag (ABOVE: must be above it); every number must be finite
AT_LEAST = {"batch_size": 1, "accumulation_steps": 1, "max_seq_len": 2, "log_interval": 1, "keep_last": 1,
            "num_workers": 0, "eval_batches": 0, "eval_interval": 0, "save_interval": 0, "max_steps": 0,
            "epochs": 0, "max_minutes": 0.0, "hidden_size": 0, "num_hidden_layers": 0, "warmup_iters": -1, "lora_rank": 1,
            "weight_decay": 0.0, "grad_clip": 0.0, "ddp_timeout": 1, "seed": 0, "simpo_gamma": 0.0, "rpo_alpha": 0.0,
            "alpha": 0.0, "threads": 0}
ABOVE = {"learning_rate": 0.0, "lora_alpha": 0.0, "beta": 0.0, "temperature": 0.0}
# the highest sensible value: past it a typo, not a plan (and an allocation that would take the machine down)
AT_MOST = {"seed": 2**32 - 1, "hidden_size": 16384, "num_hidden_layers": 512, "batch_size": 65536,
           "accumulation_steps": 65536, "max_seq_len": 1 << 20, "num_workers": 256, "lora_rank": 8192,
           "epochs": 100000, "keep_last": 10000, "ddp_timeout": 7 * 24 * 3600, "eval_batches": 10**9,
           "lora_alpha": 1e6, "learning_rate": 1e3, "max_minutes": 1e6, "beta": 1e3, "simpo_gamma": 1e3,
           "rpo_alpha": 1e3, "alpha": 1.0, "temperature": 100.0, "threads": 4096}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_flags(cfg, stage):
    """Every value range-checked before any work starts: one line naming the flag and what it takes."""
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or stage not in ONLY.get(f.name, ALL):
            continue
        if stage == "grpo" and f.name == "beta":
            continue                        # check_rl_flags: a GRPO beta of 0 keeps no reference
        if f.name in ABOVE:
            check_range(f"--{f.name}", value, ABOVE[f.name], AT_MOST.get(f.name), low_open=True)
        else:
            check_range(f"--{f.name}", value, AT_LEAST.get(f.name), AT_MOST.get(f.name))
    if cfg.epochs < 1 and cfg.max_steps < 1:
        raise UserError("--epochs must be at least 1 (or give --max_steps)")
    if not 0 <= cfg.val_ratio < 1:
        raise UserError(f"--val_ratio must be in [0, 1) (got {cfg.val_ratio})")
    if not 0 <= cfg.lora_dropout < 1:
        raise UserError(f"--lora_dropout must be in [0, 1) (got {cfg.lora_dropout})")
    if stage in LOSS_TYPES and cfg.loss_type not in LOSS_TYPES[stage]:
        raise UserError(f"--loss_type {cfg.loss_type} is not a {stage} loss; use one of {', '.join(LOSS_TYPES[stage])}")
    if stage == "grpo":
        check_rl_flags(cfg)
    if stage == "dpo" and not 0 <= cfg.label_smoothing < 0.5:
        raise UserError(f"--label_smoothing must be in [0, 0.5) (got {cfg.label_smoothing}): the share of pairs "
                        "taken as flipped")
    if cfg.label_smoothing and cfg.loss_type == "ipo":
        raise UserError("--label_smoothing is for --loss_type sigmoid or simpo; IPO has none: drop it")
    if stage == "dpo" and cfg.from_lora and not cfg.lora_name:
        raise UserError(f"--from_lora {cfg.from_lora}: give --lora_name, the name the continued adapter is saved "
                        "under (another than the one it starts from)")
    named = stage == "lora" or (stage in ("dpo", "grpo") and cfg.lora_name)
    if named and (not NAME_RE.match(cfg.lora_name) or ".." in cfg.lora_name):
        raise UserError(f"--lora_name {cfg.lora_name!r}: use letters, digits, '.', '_' and '-' only (it becomes "
                        "the file name out/lora/{lora_name}_{hidden}.pth)")
    check_device(cfg.device, "--device")


def check_rl_flags(cfg):
    """The GRPO flags' ranges (beta may be 0 here: no reference)."""
    for flag, low, high, low_open in (("beta", 0.0, 1e3, False), ("num_generations", 2, 1024, False),
                                      ("max_new_tokens", 1, 1 << 16, False), ("epsilon", 0.0, 1.0, True),
                                      ("epsilon_high", 0.0, 1e3, True), ("num_iterations", 1, 1024, False)):
        check_range(f"--{flag}", getattr(cfg, flag), low, high, low_open=low_open)


def resolve_config(cfg, stage):
    """Fill in what the defaults leave open (paths, device, dtype), so the printed and stored config says
    exactly what ran. The stage's default validation file is used only with its default training file
    (and when it exists); otherwise --val_ratio of the training file is held out."""
    defaults = STAGE_DEFAULTS[stage]
    if cfg.val_data and cfg.val_data == defaults.get("val_data"):
        # the shipped validation file goes with the shipped training file only
        if cfg.data_path != defaults["data_path"] or not layout.resolve_input(cfg.val_data).exists():
            cfg.val_data = ""
    cfg.out_dir = str(layout.out_dir(cfg.out_dir))
    cfg.data_path = str(layout.resolve_input(cfg.data_path).resolve())
    cfg.val_data = str(layout.resolve_input(cfg.val_data).resolve()) if cfg.val_data else ""
    cfg.device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not cfg.device.startswith("cuda"):
        if cfg.dtype == "float16":
            raise UserError("--dtype float16 needs a CUDA device; on a CPU use --dtype bfloat16 or float32")
        # CPU autocast: bfloat16 when asked, or by default where the CPU computes it natively
        cfg.dtype = "bfloat16" if cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and cpu_has_bf16()) else "float32"
    elif cfg.dtype == "auto":
        cfg.dtype = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
    return cfg


ALWAYS_SHOWN = ("data_path", "val_data", "out_dir", "device", "dtype")


def format_config(cfg, stage):
    """What the start of every run prints: where data and outputs are, the device, and every setting that
    differs from the stage's default, one `name: value` per line. The whole resolved config goes into the
    run's log (out/logs/{run}.jsonl, first line) and into every checkpoint."""
    defaults = TrainConfig(**STAGE_DEFAULTS[stage])
    if stage == "dpo":              # the learning rate and beta the run's own --lora_name and --loss_type pick
        auto = preference_defaults(replace(defaults, lora_name=cfg.lora_name, loss_type=cfg.loss_type))
        defaults = replace(defaults, learning_rate=auto.learning_rate, beta=auto.beta)
    if stage == "grpo":
        auto = rl_defaults(replace(defaults, lora_name=cfg.lora_name, loss_type=cfg.loss_type, epsilon=cfg.epsilon))
        defaults = replace(defaults, learning_rate=auto.learning_rate, epsilon_high=auto.epsilon_high)
    defaults = resolve_config(defaults, stage).to_dict()
    return "\n".join(f"  {k}: {v!r}" for k, v in cfg.to_dict().items()
                     if k in ALWAYS_SHOWN or v != defaults[k])


def find_base(cfg, parent):
    """The checkpoint a fine-tuning stage starts from and why -> (path, reason): --base, else
    out/{parent}_{hidden}.pth (the one there when --hidden_size is not given; for LoRA, the imported SmolLM2
    when out/ holds no full-SFT checkpoint: checkpoint.layout.find_lora_base). A missing file is one line naming
    it and how to make it."""
    if cfg.base:
        path = layout.resolve_input(cfg.base)
        if not path.is_file():
            raise UserError(f"--base {cfg.base}: file not found")
        return path.resolve(), "--base"
    if parent == "full_sft":
        return layout.find_lora_base(cfg.out_dir, cfg.hidden_size or None, cfg.use_moe)
    return (layout.find_stage_checkpoint(cfg.out_dir, parent, cfg.hidden_size or None, cfg.use_moe),
            f"the {parent} checkpoint in out/; --base picks another")


def resolve_inputs(cfg):
    """(training data path, validation data path or None) of a resolved config."""
    return Path(cfg.data_path), (Path(cfg.val_data) if cfg.val_data else None)

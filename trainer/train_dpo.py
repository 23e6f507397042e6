"""Preference training (DPO, conservative DPO, IPO, SimPO, + RPO): a chat model learns to prefer the chosen
answer of each pair to the rejected one, against a frozen reference (itself as it started).

    python trainer/train_dpo.py                                  # full fine-tuning of out/full_sft_{hidden}.pth
    python trainer/train_dpo.py --lora_name lora_dpo --base out/smollm2_135m.pth --data_path pairs.jsonl
    python trainer/train_dpo.py --from_lora lora_music --lora_name lora_music_dpo --data_path pairs.jsonl
    python trainer/train_dpo.py --loss_type simpo --label_smoothing 0.1 --rpo_alpha 0.5
    torchrun --nproc_per_node 2 trainer/train_dpo.py --precompute_ref

Data: one pair a line, MiniMind's {"chosen": [messages], "rejected": [messages]} or {"prompt", "chosen",
"rejected"} (docs/training.md, "Preference training"; scripts/make_pairs.py makes them from a model's own
answers). The base (default out/full_sft_{hidden}.pth, else the imported SmolLM2, or --base; with
--from_lora the adapter's) gives the model config and tokenizer. Writes out/dpo_{hidden}.pth (eval_model.py
--model_mode 2 loads it), or with --lora_name the adapter out/lora/{lora_name}_{hidden}.pth; with
out/logs/{run}.jsonl (loss, rewards, margin, reward accuracy, log-probabilities, learning rate) and .png.
"""


import core.openmp  # noqa: F401  (first: OpenMP threads wait passively, set before torch loads)
from checkpoint import layout
from checkpoint.adapter import attach_adapter, check_adapter, load_adapter
from checkpoint.pth import build_model, file_sha256
from core.cli import run_cli
from model.lora import LoRAConfig
from trainer.lora_flags import LORA_FLAGS, apply_lora_flags, check_lora_flags
from trainer.preference import PreferenceLoss, PreferenceObjective
from trainer.stage import artefact_writer, chat_collate, finish_run, load_base, load_pair_sets, stage_meta, start_run


def from_lora(cfg, say):
    """--from_lora: the adapter file and dict, and (its base's path, why); its LoRA settings become the
    run's (they are what trains)."""
    spec = layout.resolve_input(cfg.from_lora)
    path = spec.resolve() if spec.suffix == ".pth" else \
        layout.find_adapter(cfg.out_dir, cfg.from_lora, cfg.hidden_size or None)
    adapter = load_adapter(path)
    base = layout.find_adapter_base(adapter, layout.resolve_input(cfg.base) if cfg.base else None, cfg.out_dir)
    for field, value in LoRAConfig.from_dict(adapter["lora_config"]).to_dict().items():
        setattr(cfg, LORA_FLAGS.get(field, field), ",".join(value) if isinstance(value, (list, tuple)) else value)
    say(f"continuing {path} (its LoRA settings; the reference is this adapter as it starts)")
    return path, adapter, (base.resolve(), "--base" if cfg.base else f"the base {path.name} records")


def build(cfg, say):
    """Every input read and checked, the model built -> (model, base path, config, tokenizer, data sets,
    data path, split info, LoRA config or None, reference kind, --from_lora path or None)."""
    start = from_lora(cfg, say) if cfg.from_lora else None
    base, ckpt, config, tokenizer = load_base(cfg, "full_sft", say, chosen=start and start[2])
    if start:
        check_adapter(start[1], ckpt, base, base_tokenizer=tokenizer)
    elif cfg.lora_name:
        check_lora_flags(cfg, config)
    train_set, val_set, data_path, info = load_pair_sets(cfg, tokenizer, say)
    model = build_model(config, ckpt["model"], where=str(base))
    lora_cfg, kind = None, "copy"
    if start:
        attach_adapter(model, start[1])                       # freezes everything else
        lora_cfg, kind = LoRAConfig.from_dict(start[1]["lora_config"]), "adapter_start"
    elif cfg.lora_name:
        lora_cfg, _ = apply_lora_flags(model, cfg)
        kind = "adapter_off"
    trained = model.num_parameters(trainable_only=True)
    say(f"base {base}: " + (f"LoRA r={lora_cfg.r}; " if lora_cfg else "") +
        f"trainable {trained:,} / {model.num_parameters():,} parameters")
    return model, base, config, tokenizer, (train_set, val_set), data_path, info, lora_cfg, kind, \
        start and start[0]


def main(argv=None):
    run = start_run("dpo", argv, __doc__.splitlines()[0])
    cfg, say = run.cfg, run.say
    # read and check every input before anything is written
    model, base, config, tokenizer, (train_set, val_set), data_path, info, lora_cfg, kind, start = build(cfg, say)
    base_sha = file_sha256(base)
    loss = PreferenceLoss(cfg.loss_type, cfg.beta, cfg.label_smoothing, cfg.simpo_gamma)
    meta = {**stage_meta("dpo", data_path, info, base, base_sha),
            "preference": {"loss_type": cfg.loss_type, "beta": cfg.beta, "label_smoothing": cfg.label_smoothing,
                           "simpo_gamma": cfg.simpo_gamma if cfg.loss_type == "simpo" else None,
                           "rpo_alpha": cfg.rpo_alpha, "reference": kind if loss.needs_reference else None}}
    if start:
        meta.update(from_lora=str(start), from_lora_sha256=file_sha256(start))
    path, save_model = artefact_writer(cfg, "dpo", config, tokenizer, base, base_sha, lora_cfg)
    say(f"{cfg.loss_type} loss, beta {cfg.beta:g}" + (f", label smoothing {cfg.label_smoothing:g}" * bool(cfg.label_smoothing))
        + (f", gamma {cfg.simpo_gamma:g}" if cfg.loss_type == "simpo" else "")
        + (f", rpo_alpha {cfg.rpo_alpha:g}" * bool(cfg.rpo_alpha)) + f", learning rate {cfg.learning_rate:g}")
    run.writes(path, save_model, meta)
    run.objective = PreferenceObjective(loss, kind, rpo_alpha=cfg.rpo_alpha)
    finish_run(run, model, train_set, val_set, chat_collate(cfg, tokenizer, pairs=True))


if __name__ == "__main__":
    run_cli(main)

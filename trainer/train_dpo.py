"""Preference training (DPO, conservative DPO, IPO, SimPO, + RPO): a chat model learns to prefer the chosen
answer of each pair to the rejected one, against a frozen reference (itself as it started).

    python trainer/train_dpo.py                                  # full fine-tuning of out/full_sft_{hidden}.pth
    python trainer/train_dpo.py --lora_name lora_dpo --base out/smollm2_135m.pth --data_path pairs.jsonl
    python trainer/train_dpo.py --loss_type simpo --label_smoothing 0.1 --rpo_alpha 0.5
    torchrun --nproc_per_node 2 trainer/train_dpo.py --precompute_ref

Data: one pair a line, MiniMind's {"chosen": [messages], "rejected": [messages]} or {"prompt", "chosen",
"rejected"} (docs/training.md, "Preference training"). The base (default out/full_sft_{hidden}.pth, else the
imported SmolLM2, or --base) gives the model config and tokenizer. Writes out/dpo_{hidden}.pth (eval_model.py
--model_mode 2 loads it), or with --lora_name the adapter out/lora/{lora_name}_{hidden}.pth; with
out/logs/{run}.jsonl (loss, rewards, margin, reward accuracy, log-probabilities, learning rate) and .png.
"""


from checkpoint import layout
from checkpoint.adapter import save_adapter
from checkpoint.pth import build_model, file_sha256, save_checkpoint
from core.cli import run_cli
from trainer.args import apply_lora_flags, check_lora_flags
from trainer.preference import PreferenceLoss, PreferenceObjective
from trainer.stage import chat_collate, finish_run, load_base, load_pair_sets, stage_meta, start_run


def main(argv=None):
    run = start_run("dpo", argv, __doc__.splitlines()[0])
    cfg, say = run.cfg, run.say
    # read and check every input before anything is written
    base, ckpt, config, tokenizer = load_base(cfg, "full_sft", say)
    if cfg.lora_name:
        check_lora_flags(cfg, config)
    train_set, val_set, data_path, info = load_pair_sets(cfg, tokenizer, say)
    model = build_model(config, ckpt["model"], where=str(base))
    base_sha = file_sha256(base)
    loss = PreferenceLoss(cfg.loss_type, cfg.beta, cfg.label_smoothing, cfg.simpo_gamma)
    meta = {**stage_meta("dpo", data_path, info, base, base_sha),
            "preference": {"loss_type": cfg.loss_type, "beta": cfg.beta, "label_smoothing": cfg.label_smoothing,
                           "simpo_gamma": cfg.simpo_gamma if cfg.loss_type == "simpo" else None,
                           "rpo_alpha": cfg.rpo_alpha, "reference": None if not loss.needs_reference else
                           "the base, adapter off" if cfg.lora_name else "the base, frozen"}}
    if cfg.lora_name:
        lora_cfg, wrapped = apply_lora_flags(model, cfg)          # freezes everything else
        path = layout.adapter_path(cfg.out_dir, cfg.lora_name, config.hidden_size, config.use_moe)
        say(f"base {base}: LoRA r={lora_cfg.r} on {len(wrapped)} layers; trainable "
            f"{model.num_parameters(trainable_only=True):,} / {model.num_parameters():,} parameters")

        def save_model(m, info_):
            save_adapter(path, m, lora_cfg, base, base_sha, config, tokenizer.sha256, info_)
            return path
    else:
        path = layout.checkpoint_path(cfg.out_dir, "dpo", config.hidden_size, config.use_moe)
        say(f"base {base}: {model.num_parameters() / 1e6:.2f}M parameters, all trained")

        def save_model(m, info_):
            save_checkpoint(path, {k: v.float() for k, v in m.state_dict().items()}, config, tokenizer, info_)
            return path
    say(f"{cfg.loss_type} loss, beta {cfg.beta:g}" + (f", label smoothing {cfg.label_smoothing:g}" * bool(cfg.label_smoothing))
        + (f", gamma {cfg.simpo_gamma:g}" if cfg.loss_type == "simpo" else "")
        + (f", rpo_alpha {cfg.rpo_alpha:g}" * bool(cfg.rpo_alpha)) + f", learning rate {cfg.learning_rate:g}")
    run.writes(path, save_model, meta)
    run.objective = PreferenceObjective(loss, lora=bool(cfg.lora_name), rpo_alpha=cfg.rpo_alpha)
    finish_run(run, model, train_set, val_set, chat_collate(cfg, tokenizer, pairs=True))


if __name__ == "__main__":
    run_cli(main)

"""LoRA fine-tuning: a full-SFT model stays frozen while low-rank adapters on its linear layers train.

    python trainer/train_lora.py --lora_name lora_music --data_path ../dataset/music.jsonl --epochs 5
    python trainer/train_lora.py --lora_targets q_proj,v_proj --lora_rank 16 --use_rslora
    torchrun --nproc_per_node 2 trainer/train_lora.py --lora_name lora_music

The base (default out/full_sft_{hidden}.pth, or --base) gives the model config and tokenizer. Writes only the
adapter, out/lora/{lora_name}_{hidden}.pth, which records its base's path and sha256 (eval_model.py
--lora_name loads it onto that base), plus out/logs/{lora_name}_{hidden}.jsonl and .png.
"""


import core.openmp  # noqa: F401  (first: OpenMP threads wait passively, set before torch loads)
from checkpoint.pth import build_model, file_sha256
from core.cli import run_cli
from trainer.lora_flags import apply_lora_flags, check_lora_flags
from trainer.distill import teacher_objective
from trainer.stage import artefact_writer, chat_collate, finish_run, load_base, load_chat_sets, stage_meta, start_run


def main(argv=None):
    run = start_run("lora", argv, __doc__.splitlines()[0])
    cfg, say = run.cfg, run.say
    # read and check every input before anything is written
    base, ckpt, config, tokenizer = load_base(cfg, "full_sft", say)
    check_lora_flags(cfg, config)                                  # a rank the base cannot take: now
    train_set, val_set, data_path, info = load_chat_sets(cfg, tokenizer, say)
    model = build_model(config, ckpt["model"], where=str(base))    # the base, loaded strictly, then wrapped
    lora_cfg, wrapped = apply_lora_flags(model, cfg)             # freezes everything else
    n_train, n_all = model.num_parameters(trainable_only=True), model.num_parameters()
    say(f"base {base}: LoRA r={lora_cfg.r} on {len(wrapped)} layers ({', '.join(lora_cfg.targets)}); "
        f"trainable {n_train:,} / {n_all:,} parameters ({100 * n_train / n_all:.2f}%)")

    base_sha = file_sha256(base)
    path, save_model = artefact_writer(cfg, "lora", config, tokenizer, base, base_sha, lora_cfg)

    run.objective = teacher_objective(cfg, tokenizer, config, run.dist.device, say)        # None without --teacher
    meta = stage_meta("lora", data_path, info, base, base_sha)
    run.writes(path, save_model, {**meta, "distill": run.objective.record(cfg)} if run.objective else meta)
    finish_run(run, model, train_set, val_set, chat_collate(cfg, tokenizer))


if __name__ == "__main__":
    run_cli(main)

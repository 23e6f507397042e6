"""Full supervised fine-tuning: every weight of a pretrained model trains on conversation JSONL.

    python trainer/train_full_sft.py                       # from out/pretrain_{hidden}.pth, dataset/sft.jsonl
    python trainer/train_full_sft.py --base out/pretrain_512.pth --epochs 2 --loss_on all
    torchrun --nproc_per_node 2 trainer/train_full_sft.py

The model config and tokenizer come from the base checkpoint, never from flags. Writes out/full_sft_{hidden}.pth
(the start of trainer/train_lora.py), out/logs/full_sft_{hidden}.jsonl and .png.
"""


import core.openmp  # noqa: F401  (first: OpenMP threads wait passively, set before torch loads)
from checkpoint.pth import build_model
from core.cli import run_cli
from trainer.distill import teacher_objective
from trainer.stage import artefact_writer, chat_collate, finish_run, load_base, load_chat_sets, stage_meta, start_run


def main(argv=None):
    run = start_run("full_sft", argv, __doc__.splitlines()[0])
    cfg, say = run.cfg, run.say
    # read and check every input before anything is written
    base, ckpt, config, tokenizer = load_base(cfg, "pretrain", say)
    train_set, val_set, data_path, info = load_chat_sets(cfg, tokenizer, say)
    model = build_model(config, ckpt["model"], where=str(base))
    say(f"base {base}: {model.num_parameters() / 1e6:.2f}M parameters, all trained")

    path, save_model = artefact_writer(cfg, "full_sft", config, tokenizer, base, None)

    run.objective = teacher_objective(cfg, tokenizer, config, run.dist.device, say)        # None without --teacher
    meta = stage_meta("full_sft", data_path, info, base)
    run.writes(path, save_model, {**meta, "distill": run.objective.record(cfg)} if run.objective else meta)
    finish_run(run, model, train_set, val_set, chat_collate(cfg, tokenizer))


if __name__ == "__main__":
    run_cli(main)

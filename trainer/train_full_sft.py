"""Full supervised fine-tuning: every weight of a pretrained model trains on conversation JSONL.

    python trainer/train_full_sft.py                       # from out/pretrain_{hidden}.pth, dataset/sft.jsonl
    python trainer/train_full_sft.py --base out/pretrain_512.pth --epochs 2 --loss_on all
    torchrun --nproc_per_node 2 trainer/train_full_sft.py

The model config and tokenizer come from the base checkpoint, never from flags. Writes out/full_sft_{hidden}.pth
(the start of trainer/train_lora.py), out/logs/full_sft_{hidden}.jsonl and .png.
"""
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # repo root

from dataset.lm_dataset import ChatDataset, collate_chat, load_split  # noqa: E402
from model.checkpoint import build_model, checkpoint_name, file_sha256, load_checkpoint, save_checkpoint  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.errors import run_cli  # noqa: E402
from model.tokenizer import load_tokenizer_from_state  # noqa: E402
from trainer.args import find_base, format_config, out_dir, parse_args, resolve_inputs  # noqa: E402
from trainer.distributed import cleanup_distributed, seed_everything, setup_distributed  # noqa: E402
from trainer.loop import train  # noqa: E402


def load_chat_sets(cfg, tokenizer, say):
    """Conversation JSONL -> (train ChatDataset, val ChatDataset or None, data path, split info)."""
    data_path, val_path = resolve_inputs(cfg)
    train_recs, val_recs, info = load_split(data_path, val_path, cfg.val_ratio, cfg.seed, "chat", cfg.skip_bad)
    make = partial(ChatDataset, tokenizer=tokenizer, max_seq_len=cfg.max_seq_len, loss_on=cfg.loss_on,
                   system_prompt=cfg.system_prompt)
    train_set = make([r["conversations"] for r in train_recs])
    val_set = make([r["conversations"] for r in val_recs]) if val_recs else None
    say(f"{data_path}: {len(train_set):,} conversations, {train_set.n_truncated} truncated to "
        f"{cfg.max_seq_len} tokens, {train_set.n_no_target} without a target token"
        + (f", {info['n_bad']} bad lines skipped" if info["n_bad"] else ""))
    return train_set, val_set, data_path, info


def main(argv=None):
    cfg = parse_args("full_sft", argv, __doc__.splitlines()[0])
    dist = setup_distributed(cfg.device)
    say = print if dist.is_main else (lambda *a, **k: None)
    say("train config:\n" + format_config(cfg))
    seed_everything(cfg.seed)

    # read and check every input before anything is written
    base = find_base(cfg, "pretrain")
    ckpt = load_checkpoint(base)
    config, tokenizer = ModelConfig.from_dict(ckpt["config"]), load_tokenizer_from_state(ckpt["tokenizer"])
    train_set, val_set, data_path, info = load_chat_sets(cfg, tokenizer, say)
    model = build_model(config, ckpt["model"], where=str(base))
    say(f"base {base}: {model.num_parameters() / 1e6:.2f}M parameters, all trained")

    path = out_dir(cfg) / checkpoint_name("full_sft", config.hidden_size, config.use_moe)

    def save_model(m, meta):
        save_checkpoint(path, {k: v.float() for k, v in m.state_dict().items()}, config, tokenizer, meta)
        return path

    collate = partial(collate_chat, pad_id=tokenizer.pad_id,
                      pad_to=cfg.max_seq_len if cfg.padding == "max_length" else None)
    meta = {"stage": "full_sft", "parent": str(base), "parent_sha256": file_sha256(base),
            "val_path": info["val_path"], "val_lines": info["val_lines"], "data_path": str(data_path)}
    final = train(cfg, model, train_set, collate, save_model, path.stem, dist, val_set=val_set, meta=meta)
    cleanup_distributed()
    say(f"saved {final}")


if __name__ == "__main__":
    run_cli(main)

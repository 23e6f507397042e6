"""Fold a LoRA adapter into its base model and write a full checkpoint in the usual .pth format.

    python scripts/merge_lora.py --adapter out/lora/lora_music_512.pth
    python scripts/merge_lora.py --adapter out/lora/lora_music_512.pth --base out/full_sft_512.pth \\
        --out out/lora_music_merged_512.pth [--force]

The adapter is checked against the base first (model config, tokenizer, and the base file's sha256 unless
--force). The merged file loads like any checkpoint: `python eval_model.py --ckpt out/lora_music_merged_512.pth`.
"""
from pathlib import Path


from core.cli import ArgumentParser, run_cli
from checkpoint.adapter import load_model_with_adapter
from checkpoint.pth import file_sha256, save_checkpoint
from model.config import ModelConfig
from core.ownership import check_outputs
from model.lora import merged_state_dict
from checkpoint.layout import merged_path


def main(argv=None):
    p = ArgumentParser(description="Merge a LoRA adapter into its base checkpoint.")
    p.add_argument("--adapter", required=True, help="adapter file written by trainer/train_lora.py")
    p.add_argument("--base", default=None, help="base checkpoint (default: the one the adapter records)")
    p.add_argument("--out", default=None, help="merged checkpoint (default: out/<lora_name>_merged_<hidden>.pth)")
    p.add_argument("--force", action="store_true", help="accept a base whose sha256 differs from the recorded "
                   "one (model config, tokenizer and shapes are still checked)")
    args = p.parse_args(argv)
    if args.out:                                        # before loading: the flags given
        check_outputs([("--out", args.out)], [("--adapter", args.adapter), ("--base", args.base)])
    model, tokenizer, base_ckpt, adapter = load_model_with_adapter(args.adapter, args.base, force=args.force)
    config = ModelConfig.from_dict(base_ckpt["config"])
    out = Path(args.out or merged_path(args.adapter, config.hidden_size, config.use_moe))
    check_outputs([("--out", out)], [("--adapter", args.adapter), ("the adapter's base", base_ckpt["path"])])
    meta = {"stage": "merged",
            "parent": base_ckpt["path"], "parent_sha256": file_sha256(base_ckpt["path"]),
            "adapter": {"path": str(args.adapter), "sha256": file_sha256(args.adapter)},
            "lora_config": adapter["lora_config"],
            "adapter_meta": adapter.get("meta", {})}
    save_checkpoint(out, merged_state_dict(model), config, tokenizer, meta)
    print(f"saved {out}")


if __name__ == "__main__":
    run_cli(main)

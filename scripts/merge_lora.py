"""Fold a LoRA adapter into its base model and write a full checkpoint in the usual .pth format.

    python scripts/merge_lora.py --adapter out/lora/lora_music_512.pth
    python scripts/merge_lora.py --adapter out/lora/lora_music_512.pth --base out/full_sft_512.pth \\
        --out out/lora_music_merged_512.pth [--force]

The adapter is checked against the base first (model config, tokenizer, and the base file's sha256 unless
--force). The merged file loads like any checkpoint: `eval_model.py --load out/lora_music_merged_512.pth`.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # repo root

from model.checkpoint import file_sha256, save_checkpoint
from model.config import ModelConfig
from model.errors import UserError, run_cli
from model.lora import load_model_with_adapter, merged_state_dict


def default_out_path(adapter_path, config):
    """out/lora/lora_music_512.pth -> out/lora_music_merged_512.pth (the size suffix stays last)."""
    adapter_path = Path(adapter_path)
    folder = adapter_path.parent.parent if adapter_path.parent.name == "lora" else adapter_path.parent
    stem = adapter_path.stem
    suffix = f"_{config.hidden_size}" + ("_moe" if config.use_moe else "")
    if stem.endswith(suffix):
        return folder / f"{stem[:-len(suffix)]}_merged{suffix}.pth"
    return folder / f"{stem}_merged.pth"


def main(argv=None):
    p = argparse.ArgumentParser(description="Merge a LoRA adapter into its base checkpoint.")
    p.add_argument("--adapter", required=True, help="adapter file written by trainer/train_lora.py")
    p.add_argument("--base", default=None, help="base checkpoint (default: the one the adapter records)")
    p.add_argument("--out", default=None, help="merged checkpoint (default: out/<lora_name>_merged_<hidden>.pth)")
    p.add_argument("--force", action="store_true", help="accept a base whose sha256 differs from the recorded "
                   "one (model config, tokenizer and shapes are still checked)")
    args = p.parse_args(argv)

    model, tokenizer, base_ckpt, adapter = load_model_with_adapter(args.adapter, args.base, force=args.force)
    config = ModelConfig.from_dict(base_ckpt["config"])
    out = Path(args.out) if args.out else default_out_path(args.adapter, config)
    if out.resolve() in (Path(base_ckpt["path"]).resolve(), Path(args.adapter).resolve()):
        raise UserError(f"--out {out}: would overwrite its own input; choose another path")
    meta = {"stage": "merged",
            "parent": {"path": base_ckpt["path"], "sha256": file_sha256(base_ckpt["path"])},
            "adapter": {"path": str(args.adapter), "sha256": file_sha256(args.adapter)},
            "lora_config": adapter["lora_config"],
            "adapter_meta": adapter.get("meta", {})}
    save_checkpoint(out, merged_state_dict(model), config, tokenizer, meta)
    print(f"saved {out}")


if __name__ == "__main__":
    run_cli(main)

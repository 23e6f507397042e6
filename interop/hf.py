"""Import Hugging Face checkpoints into TinyMind (GGUF files: interop/gguf_import.py), export TinyMind to transformers and PEFT.

State-dict keys are Hugging Face Llama's on both sides, so weights map by name; the work is in configs,
tokenizers, chat templates and GGUF's quantisation and Q/K row order.

    python scripts/convert_model.py --from_hf DIR --out out/model.pth
    python scripts/convert_model.py --from_gguf FILE.gguf --out out/model.pth   (interop/gguf_import.py)
    python scripts/convert_model.py --to_hf DIR --ckpt out/full_sft_512.pth
    python scripts/convert_model.py --to_peft DIR --adapter out/lora/lora_music_512.pth --ckpt BASE.pth

    from interop.hf import import_hf, load_hf_model
    state, config, tokenizer = import_hf("path/to/hf_model")
"""
import functools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer as _Tok, processors

from checkpoint.adapter import load_adapter
from checkpoint.pth import FORMAT, build_model, load_checkpoint
from core.atomic import write_files
from core.errors import UserError
from model.config import ModelConfig
from model.model import TinyMindForCausalLM
from tokenizer.hf import (HFTokenizer, SentencePieceHFTokenizer, chat_template_from_jinja,
                           chat_template_to_jinja, sentencepiece_to_hf_json)
from tokenizer.tokenizer import SentencePieceTokenizer, load_tokenizer_from_state

SUPPORTED_HF = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}


def _read_json(path, required=True):
    path = Path(path)
    if not path.is_file():
        if required:
            raise UserError(f"{path}: not found (is this a Hugging Face model folder?)")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def _rope_theta(cfg, where):
    """rope base from a config.json of transformers 4 (rope_theta, rope_scaling) or 5 (rope_parameters)."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling")
    for s in (scaling, params):
        kind = (s or {}).get("rope_type", (s or {}).get("type", "default"))
        if s and kind not in ("default", None):
            raise UserError(f"{where}: rope scaling {kind!r} is not supported (TinyMind uses plain rope); "
                            "pick a model without rope_scaling")
    return float(cfg.get("rope_theta") or params.get("rope_theta") or 10000.0)


def config_from_hf(cfg, where="config.json"):
    """A ModelConfig from a transformers config.json dict (UserError for anything TinyMind cannot run)."""
    arch = (cfg.get("architectures") or [None])[0]
    if arch not in SUPPORTED_HF:
        raise UserError(f"{where}: architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_HF)}")
    kind = SUPPORTED_HF[arch]
    if cfg.get("hidden_act", "silu") != "silu":
        raise UserError(f"{where}: hidden_act {cfg['hidden_act']!r} is not supported (only silu)")
    theta = _rope_theta(cfg, where)
    max_pos = int(cfg.get("max_position_embeddings", 4096))
    window = cfg.get("sliding_window")
    if kind == "mistral" and window is not None and window < max_pos:
        raise UserError(f"{where}: sliding-window attention (window {window} < {max_pos} positions) is not "
                        "supported; set \"sliding_window\": null in config.json to import it with full attention "
                        f"(identical up to {window} tokens)")
    if kind == "qwen2" and cfg.get("use_sliding_window"):
        raise UserError(f"{where}: use_sliding_window is true; sliding-window attention is not supported")
    if kind == "llama" and cfg.get("attention_bias"):
        raise UserError(f"{where}: Llama with attention_bias (a bias on o_proj too) is not supported")
    heads = int(cfg["num_attention_heads"])
    return ModelConfig(
        vocab_size=int(cfg["vocab_size"]), hidden_size=int(cfg["hidden_size"]),
        num_hidden_layers=int(cfg["num_hidden_layers"]), num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        intermediate_size=int(cfg["intermediate_size"]),
        head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
        max_position_embeddings=max_pos, rope_theta=theta, rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        attention_bias=kind == "qwen2", mlp_bias=bool(cfg.get("mlp_bias", False)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        dropout=0.0, model_type=kind)


def _read_hf_weights(d):
    """All tensors of a folder: model.safetensors, sharded safetensors (index json) or pytorch_model*.bin."""
    d = Path(d)
    for index_name, loader in (("model.safetensors.index.json", load_file),
                               ("pytorch_model.bin.index.json", None)):
        index = d / index_name
        if index.is_file():
            files = sorted(set(_read_json(index)["weight_map"].values()))
            break
    else:
        files = [p.name for p in sorted(d.glob("*.safetensors"))] or [p.name for p in sorted(d.glob("pytorch_model*.bin"))]
    if not files:
        raise UserError(f"{d}: no *.safetensors or pytorch_model.bin weights found")
    state = {}
    for name in files:
        path = d / name
        if not path.is_file():
            raise UserError(f"{path}: shard listed in the index is missing")
        try:
            part = load_file(str(path)) if name.endswith(".safetensors") else torch.load(path, map_location="cpu",
                                                                                          weights_only=True)
        except Exception as e:
            raise UserError(f"{path}: cannot read weights ({type(e).__name__}: {str(e)[:100]})") from None
        state.update(part)
    return state


def _token_str(value):
    if isinstance(value, dict):
        return value.get("content")
    return value


def _post_processor_adds(tok_json, token):
    """Whether tokenizer.json's post-processor prepends `token` (Llama-style BOS)."""
    def walk(p):
        if not p:
            return False
        if p.get("type") == "Sequence":
            return any(walk(q) for q in p.get("processors", []))
        if p.get("type") == "TemplateProcessing":
            single = p.get("single") or []
            return bool(single) and single[0].get("SpecialToken", {}).get("id") == token
        return False
    return walk(json.loads(tok_json).get("post_processor"))


def load_hf_tokenizer(d, model_cfg=None):
    """A model folder's own tokenizer (tokenizer.json, else sentencepiece tokenizer.model) and chat template."""
    d = Path(d)
    tcfg = _read_json(d / "tokenizer_config.json", required=False)
    model_cfg = model_cfg or {}
    template = tcfg.get("chat_template")
    if (d / "chat_template.jinja").is_file():
        template = (d / "chat_template.jinja").read_text(encoding="utf-8")
    elif (d / "chat_template.json").is_file():
        template = _read_json(d / "chat_template.json").get("chat_template", template)
    bos, eos, pad = (_token_str(tcfg.get(k)) for k in ("bos_token", "eos_token", "pad_token"))
    if (d / "tokenizer.json").is_file():
        text = (d / "tokenizer.json").read_text(encoding="utf-8")
        try:
            probe = _Tok.from_str(text)
        except Exception as e:
            raise UserError(f"{d / 'tokenizer.json'}: cannot be read by the tokenizers library ({e})") from None
        if eos is None and model_cfg.get("eos_token_id") is not None:
            eid = model_cfg["eos_token_id"]
            eos = probe.id_to_token(eid[0] if isinstance(eid, list) else eid)
        if eos is None:
            raise UserError(f"{d}: no eos_token in tokenizer_config.json or eos_token_id in config.json")
        add_bos = bool(tcfg.get("add_bos_token", False)) or (bos is not None and _post_processor_adds(text, bos))
        tpl = chat_template_from_jinja(template, bos or "", eos, where=str(d))
        return HFTokenizer(text, eos, pad, bos, add_bos, tpl)
    if (d / "tokenizer.model").is_file():
        tpl = chat_template_from_jinja(template, bos or "<s>", eos or "</s>", where=str(d))
        return SentencePieceHFTokenizer((d / "tokenizer.model").read_bytes(), eos or "</s>", pad, bos or "<s>",
                                        tcfg.get("add_bos_token", True), tpl)
    raise UserError(f"{d}: no tokenizer.json or tokenizer.model found")


def expected_shapes(config):
    """The weights a model of config has -> {name: shape}, nothing allocated (a tied lm_head left out)."""
    return dict(_shapes(tuple(sorted(config.to_dict().items()))))


@functools.lru_cache(maxsize=16)
def _shapes(config_items):
    config = ModelConfig(**dict(config_items))
    with torch.device("meta"):          # a meta model: the names and shapes, no memory
        shapes = {k: tuple(v.shape) for k, v in TinyMindForCausalLM(config).state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return tuple(shapes.items())


def check_keys(state, config, where):
    expected = set(expected_shapes(config))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise UserError(f"{where}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")


def import_hf(d, dtype=torch.float32):
    """A transformers model folder -> (state_dict, ModelConfig, Tokenizer)."""
    d = Path(d)
    if not d.is_dir():
        raise UserError(f"{d}: not a directory; pass a Hugging Face model folder (config.json + *.safetensors)")
    cfg = _read_json(d / "config.json")
    config = config_from_hf(cfg, where=str(d / "config.json"))
    tokenizer = load_hf_tokenizer(d, cfg)
    raw = _read_hf_weights(d)
    state = {k: v.to(dtype) if dtype else v for k, v in raw.items() if not k.endswith("rotary_emb.inv_freq")}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    check_keys(state, config, str(d))
    config.bos_token_id = tokenizer.bos_id if tokenizer.bos_id is not None else -1
    config.eos_token_id, config.pad_token_id = tokenizer.eos_id, tokenizer.pad_id
    return state, config, tokenizer


def load_hf_model(d, device="cpu", dtype=None):
    """Import an HF folder in memory (nothing written) -> (model in eval mode, tokenizer, ckpt-like dict)."""
    state, config, tokenizer = import_hf(d)
    model = build_model(config, state, device, dtype, where=str(d)).eval()
    ckpt = {"format": FORMAT, "model": state, "config": config.to_dict(), "tokenizer": tokenizer.to_state(),
            "meta": {"stage": "imported", "source": str(Path(d).resolve())}}
    return model, tokenizer, ckpt


def hf_config_dict(config, dtype="float32"):
    """config.json for transformers: Qwen2ForCausalLM for an imported Qwen2, else LlamaForCausalLM."""
    if config.use_moe:
        raise UserError("export of mixture-of-experts models is not supported (no matching transformers class)")
    qwen2 = config.attention_bias and config.model_type == "qwen2" and not config.mlp_bias
    common = dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim, hidden_act="silu",
        max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.rms_norm_eps,
        rope_theta=config.rope_theta, rope_scaling=None,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=config.tie_word_embeddings, attention_dropout=0.0, initializer_range=0.02,
        bos_token_id=config.bos_token_id if config.bos_token_id >= 0 else None,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, use_cache=True, torch_dtype=dtype)
    if qwen2:
        return dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", use_sliding_window=False,
                    sliding_window=None, max_window_layers=config.num_hidden_layers, **common)
    # Llama's attention_bias also puts a bias on o_proj: export_hf writes zeros there. (Only Qwen2 imports go
    # back as Qwen2: transformers 5 gives model_type "qwen2" its own Qwen2Tokenizer, whatever tokenizer.json says.)
    return dict(architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=config.attention_bias,
                mlp_bias=config.mlp_bias, pretraining_tp=1, **common)


def hf_tokenizer_files(tokenizer):
    """{file name: text} for tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    inv = {i: s for s, i in tokenizer.special_tokens.items()}
    if isinstance(tokenizer, HFTokenizer):
        tok_json = tokenizer.to_hf_json()
    elif isinstance(tokenizer, SentencePieceTokenizer):
        tok_json = sentencepiece_to_hf_json(tokenizer)
    else:
        raise UserError(f"cannot export tokenizer of type {type(tokenizer).__name__}")
    t = _Tok.from_str(tok_json)

    def name(i):
        return inv.get(i) or (t.id_to_token(i) if i is not None else None)
    bos = name(tokenizer.bos_id) if tokenizer.bos_id is not None else None
    eos, pad = name(tokenizer.eos_id), name(tokenizer.pad_id)
    if tokenizer.bos_id is not None:
        # the tokenizer prepends bos: say so in tokenizer.json as transformers' Llama tokenizers do
        t.post_processor = processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                                         special_tokens=[(bos, tokenizer.bos_id)])
        tok_json = t.to_str()
    special = {"eos_token": eos, "pad_token": pad}
    if bos:
        special["bos_token"] = bos
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1 << 20,
            "clean_up_tokenization_spaces": False, "add_bos_token": tokenizer.bos_id is not None,
            "add_eos_token": False,
            "chat_template": chat_template_to_jinja(tokenizer.chat_template,
                                                    bos if tokenizer.bos_id is not None else ""),
            **special}
    return {"tokenizer.json": tok_json, "tokenizer_config.json": json.dumps(tcfg, indent=2, ensure_ascii=False),
            "special_tokens_map.json": json.dumps(special, indent=2, ensure_ascii=False)}


def export_hf(ckpt, out_dir, dtype=None):
    """A TinyMind checkpoint (path or loaded dict; a merged LoRA too) -> a folder transformers loads as is."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    config = ModelConfig.from_dict(ckpt["config"])
    tokenizer = load_tokenizer_from_state(ckpt["tokenizer"])
    state = dict(ckpt["model"])
    if any(".lora_A." in k or ".base." in k for k in state):
        raise UserError("checkpoint holds unmerged LoRA weights; merge it first (scripts/merge_lora.py) "
                        "or export the adapter with --to_peft")
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    check_keys(state, config, "checkpoint")
    tensors = {k: (v.to(dtype) if dtype else v).detach().contiguous().clone() for k, v in state.items()}
    dtype_name = str(next(iter(tensors.values())).dtype).replace("torch.", "")
    cfg = hf_config_dict(config, dtype_name)
    if cfg["model_type"] == "llama" and config.attention_bias:
        for i in range(config.num_hidden_layers):
            w = tensors[f"model.layers.{i}.self_attn.o_proj.weight"]
            tensors[f"model.layers.{i}.self_attn.o_proj.bias"] = torch.zeros(w.shape[0], dtype=w.dtype)
    stops = sorted(tokenizer.stop_ids)
    gen = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": stops if len(stops) > 1 else stops[0],
           "pad_token_id": tokenizer.pad_id, "do_sample": False}
    files = {"model.safetensors": lambda p: save_file(tensors, str(p), metadata={"format": "pt"}),
             "config.json": json.dumps(cfg, indent=2), "generation_config.json": json.dumps(gen, indent=2),
             **hf_tokenizer_files(tokenizer)}
    return write_files(out_dir, files)       # files of the user's already in out_dir are kept


def export_peft(adapter, out_dir, base_model_name_or_path=""):
    """A TinyMind adapter (path or dict) -> adapter_config.json + adapter_model.safetensors for
    peft.PeftModel.from_pretrained(base, out_dir) on the --to_hf export of its base."""
    if not isinstance(adapter, dict):
        adapter = load_adapter(adapter)
    lcfg = adapter["lora_config"]
    config = ModelConfig.from_dict(adapter["config"])
    hf_config_dict(config)                  # refuses what --to_hf cannot export either
    tensors, targets = {}, set()
    for k, v in adapter["lora"].items():
        if ".lora_A." not in k and ".lora_B." not in k:
            raise UserError(f"adapter: unexpected tensor {k!r}")
        targets.add(k.split(".lora_")[0].split(".")[-1])
        tensors["base_model.model." + k] = v.detach().float().contiguous().clone()
    if not tensors:
        raise UserError("adapter holds no LoRA weights")
    r = int(lcfg.get("r", 8))
    peft_cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": lcfg.get("alpha", 16),
                "lora_dropout": float(lcfg.get("dropout", 0.0)), "target_modules": sorted(targets),
                "use_rslora": bool(lcfg.get("use_rslora", False)), "bias": "none", "fan_in_fan_out": False,
                "inference_mode": True, "init_lora_weights": True, "modules_to_save": None,
                "base_model_name_or_path": str(base_model_name_or_path or "")}
    return write_files(out_dir, {
        "adapter_model.safetensors": lambda p: save_file(tensors, str(p), metadata={"format": "pt"}),
        "adapter_config.json": json.dumps(peft_cfg, indent=2)})

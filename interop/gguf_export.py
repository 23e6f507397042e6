"""Write GGUF (llama.cpp's and Ollama's format) from a TinyMind checkpoint, a merged one, or an adapter on
its base (merged here): the weights as f32, f16 or q8_0, the model's shape, its tokenizer in llama.cpp's
own terms (a sentencepiece BPE as tokenizer.ggml.model "llama", an imported GGUF vocabulary as "gpt2") and
its chat template as jinja, written with the gguf package. The tokenizer's whole TinyMind state rides along
under "tinymind.tokenizer", so interop.gguf_import.import_gguf gives back exactly the tokenizer it had (the
name tables, the q/k permutation and that entry's encoding live there, used both ways).
q8_0 writes F16 any matrix whose rows are no whole number of its 32-value blocks (as llama.cpp's own converter
does), says how many, and refuses a model where that is every matrix unless allow_fallback.
Library module; the CLI is scripts/convert_model.py --to_gguf FILE --ckpt F [--type f32|f16|q8_0].

    from interop.gguf_export import export_gguf
    export_gguf("out/full_sft_512.pth", "out/model.gguf", "q8_0")
"""
from pathlib import Path

import numpy as np
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from checkpoint.adapter import is_adapter, load_model_with_adapter
from checkpoint.pth import check_checkpoint, read_pth
from core.atomic import atomic_path
from core.errors import UserError
from interop.gguf_import import STATE_KEY, hf_to_gguf_name, permute_qk, tokenizer_state_json
from interop.hf import check_keys
from model.config import ModelConfig
from model.lora import merged_state_dict
from tokenizer.hf import GGUFBPETokenizer, chat_template_to_jinja
from tokenizer.tokenizer import SentencePieceTokenizer, load_tokenizer_from_state

TYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32                               # q8_0 quantises blocks of 32 values along a row


def gguf_name(name):
    """A TinyMind (Hugging Face) weight name -> its GGUF name."""
    found = hf_to_gguf_name(name)
    if found is None:
        raise UserError(f"checkpoint: weight {name!r} has no GGUF name")
    return found


def load_for_export(ckpt):
    """A checkpoint path (full, merged, or an adapter: merged on its recorded base) -> (ModelConfig,
    tokenizer, state dict of float tensors)."""
    obj = read_pth(ckpt)
    if is_adapter(obj):
        model, tokenizer, base, _ = load_model_with_adapter(ckpt)
        return ModelConfig.from_dict(base["config"]), tokenizer, merged_state_dict(model)
    obj = check_checkpoint(obj, ckpt)
    state = dict(obj["model"])
    if any(".lora_A." in k or ".base." in k for k in state):
        raise UserError(f"{ckpt}: holds unmerged LoRA weights; merge it first (scripts/merge_lora.py)")
    return ModelConfig.from_dict(obj["config"]), load_tokenizer_from_state(obj["tokenizer"], str(ckpt)), state


def architecture(config):
    """GGUF's general.architecture: qwen2 for a model with q/k/v biases (an imported Qwen2), else llama."""
    if config.use_moe:
        raise UserError("GGUF export of mixture-of-experts models is not supported")
    if config.mlp_bias or (config.attention_bias and config.model_type != "qwen2"):
        raise UserError("GGUF export: biases are supported only on q/k/v of a Qwen2 model")
    return "qwen2" if config.attention_bias else "llama"


def stored_type(shape, kind):
    """What a weight of shape is written as for --type kind: "F32" for norms and biases (1-D, as llama.cpp's
    own converter keeps them), "Q8_0" for a q8_0 matrix whose rows are a whole number of 32-value blocks,
    else "F16" (f16, and a q8_0 matrix whose rows q8_0 cannot cut: it falls back), or "F32" for f32."""
    if len(shape) == 1 or kind == "f32":
        return "F32"
    return "Q8_0" if kind == "q8_0" and shape[-1] % Q8_BLOCK == 0 else "F16"


def tensor_data(name, w, config, arch, kind):
    """(array to write, its GGML type or None for the array's own dtype) of one weight."""
    import gguf                 # gguf: ~0.3 s of start-up, only when a GGUF is written
    w = w.detach().float().cpu().numpy()
    if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
        w = permute_qk(w, config.num_attention_heads if ".attn_q." in name else config.num_key_value_heads)
    stored = stored_type(w.shape, kind)
    if stored == "Q8_0":
        q = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(w, q), q
    return w.astype(np.float32 if stored == "F32" else np.float16), None


def q8_0_fallbacks(state, kind, allow_fallback, where):
    """What a q8_0 export writes F16 instead: "" (none, or not q8_0), else a note saying how many matrices and
    why. Every matrix is refused in one line unless allow_fallback: such a file is an f16 file named q8_0."""
    if kind != "q8_0":
        return ""
    matrices = {k: tuple(v.shape) for k, v in state.items() if v.dim() > 1}
    fallen = [s for s in matrices.values() if stored_type(s, kind) == "F16"]
    widths = ", ".join(str(w) for w in sorted({s[-1] for s in fallen}))
    why = f"rows of {widths} values are no whole number of q8_0's {Q8_BLOCK}-value blocks"
    if fallen and len(fallen) == len(matrices) and not allow_fallback:
        raise UserError(f"--type q8_0: every matrix of {where} would be written F16 ({why}); use --type f16, "
                        "or pass --allow_fallback to write them so")
    return f"{len(fallen)} of {len(matrices)} matrices written F16: {why}" if fallen else ""


def add_tokenizer(writer, tokenizer):
    """The tokenizer in llama.cpp's terms, its chat template, and its TinyMind state (STATE_KEY)."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        add_sentencepiece(writer, tokenizer)
    elif isinstance(tokenizer, GGUFBPETokenizer):
        g = tokenizer.gguf
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(g["pre"])
        writer.add_token_list(g["tokens"])
        writer.add_token_types(g["token_types"])
        writer.add_token_merges(g["merges"])
    else:
        raise UserError(f"GGUF export of a {type(tokenizer).__name__} tokenizer is not supported "
                        "(TinyMind's sentencepiece and imported GGUF vocabularies are); use --to_hf")
    writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_pad_token_id(tokenizer.pad_id)
    end = tokenizer.encode_special(tokenizer.chat_template.end) if tokenizer.chat_template.end else []
    if len(end) == 1 and end[0] != tokenizer.eos_id:
        writer.add_eot_token_id(end[0])                  # llama.cpp stops at the end of a turn too
    bos = getattr(tokenizer, "bos_token", None) or ""
    bos_id = tokenizer.special_tokens.get(bos) if bos else None
    if bos_id is not None:                               # written even when not prepended: templates name it
        writer.add_bos_token_id(bos_id)
    writer.add_add_bos_token(tokenizer.bos_id is not None)
    writer.add_add_eos_token(False)
    writer.add_chat_template(chat_template_to_jinja(tokenizer.chat_template, bos if tokenizer.bos_id is not None
                                                    else ""))
    writer.add_string(STATE_KEY, tokenizer_state_json(tokenizer.to_state()))


def add_sentencepiece(writer, tokenizer):
    """A sentencepiece BPE model as llama.cpp's "llama" (SPM) vocabulary: its pieces, scores and types
    (sentencepiece's type numbers are GGUF's) and whether it puts a space before the text."""
    proto = spm_pb2.ModelProto()
    proto.ParseFromString(tokenizer.model_bytes)
    if proto.trainer_spec.model_type != spm_pb2.TrainerSpec.BPE:
        raise UserError("GGUF export: the sentencepiece model is not BPE, which llama.cpp's SPM vocabulary assumes")
    if proto.normalizer_spec.remove_extra_whitespaces:
        raise UserError("GGUF export: the sentencepiece model squeezes whitespace, which llama.cpp does not; "
                        "its prompts would tokenize differently")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([x.piece for x in proto.pieces])
    writer.add_token_scores([float(x.score) for x in proto.pieces])
    writer.add_token_types([int(x.type) for x in proto.pieces])
    writer.add_add_space_prefix(bool(proto.normalizer_spec.add_dummy_prefix))
    if tokenizer.sp.unk_id() >= 0:
        writer.add_unk_token_id(tokenizer.sp.unk_id())


def export_gguf(ckpt, out_path, kind="f16", name=None, allow_fallback=False):
    """Write out_path (atomically: a failure leaves nothing) -> its path."""
    return export_gguf_noted(ckpt, out_path, kind, name, allow_fallback)[0]


def export_gguf_noted(ckpt, out_path, kind="f16", name=None, allow_fallback=False):
    """export_gguf -> (its path, q8_0_fallbacks' note: how many matrices q8_0 wrote F16, and why; "" if none)."""
    import gguf                 # gguf: ~0.3 s of start-up, only when a GGUF is written
    if kind not in TYPES:
        raise UserError(f"--type {kind}: choose one of {', '.join(TYPES)}")
    config, tokenizer, state = load_for_export(ckpt)
    arch = architecture(config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    check_keys(state, config, str(ckpt))
    fallen = q8_0_fallbacks(state, kind, allow_fallback, ckpt)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[kind]
    with atomic_path(out_path) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_name(name or Path(ckpt).stem)
        w.add_context_length(config.max_position_embeddings)
        w.add_embedding_length(config.hidden_size)
        w.add_block_count(config.num_hidden_layers)
        w.add_feed_forward_length(config.intermediate_size)
        w.add_head_count(config.num_attention_heads)
        w.add_head_count_kv(config.num_key_value_heads)
        w.add_key_length(config.head_dim)
        w.add_value_length(config.head_dim)
        w.add_rope_dimension_count(config.head_dim)
        w.add_rope_freq_base(config.rope_theta)
        w.add_layer_norm_rms_eps(config.rms_norm_eps)
        w.add_vocab_size(config.vocab_size)
        w.add_file_type(file_type)
        add_tokenizer(w, tokenizer)
        for key in sorted(state, key=order):
            data, raw = tensor_data(gguf_name(key), state[key], config, arch, kind)
            w.add_tensor(gguf_name(key), data, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return Path(out_path), fallen


def order(key):
    """Tensors in llama.cpp's usual order: embeddings, then each block in turn, then the head."""
    parts = key.split(".")
    if key.startswith("model.layers."):
        return (1, int(parts[2]), key)
    return (0 if "embed_tokens" in key else 2, 0, key)

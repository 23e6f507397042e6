"""Import llama-architecture GGUF files (llama.cpp's format; F32/F16/BF16 and the quantised types gguf can
dequantize) with their embedded vocabulary, merges and chat template. Library module; the CLI is
scripts/convert_model.py --from_gguf FILE / --smollm2.

    from interop.gguf_import import import_gguf
    state, config, tokenizer = import_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
"""
import base64
import json
from pathlib import Path

import numpy as np
import torch

from model.config import ModelConfig
from interop.hf import check_keys
from core.errors import UserError
from tokenizer.hf import GGUFBPETokenizer, chat_template_from_jinja
from tokenizer.tokenizer import load_tokenizer_from_state

# GGUF's tensor names <-> TinyMind's (Hugging Face's), both ways (interop/gguf_export.py writes with them)
GGUF_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
              "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
              "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
              "ffn_down": "mlp.down_proj"}
GGUF_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
            "output.weight": "lm_head.weight"}
STATE_KEY = "tinymind.tokenizer"            # a TinyMind-written file's exact tokenizer state, JSON (bytes: base64)


def gguf_to_hf_name(name):
    if name in GGUF_TOP:
        return GGUF_TOP[name]
    parts = name.split(".")            # blk.N.attn_q.weight
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in GGUF_NAMES:
        return f"model.layers.{parts[1]}.{GGUF_NAMES[parts[2]]}.{parts[3]}"
    return None


def hf_to_gguf_name(name):
    """The inverse of gguf_to_hf_name (None for a name GGUF has no place for)."""
    top = {v: k for k, v in GGUF_TOP.items()}
    if name in top:
        return top[name]
    parts = name.split(".")            # model.layers.N.self_attn.q_proj.weight
    kind = {v: k for k, v in GGUF_NAMES.items()}.get(".".join(parts[3:-1]))
    if parts[:2] == ["model", "layers"] and kind:
        return f"blk.{parts[2]}.{kind}.{parts[-1]}"
    return None


def permute_qk(w, n_head):
    """llama.cpp's convert_hf_to_gguf permute(): each head's rows from HF's rotate-half layout (i, i + d/2)
    to interleaved pairs (2i, 2i + 1) for GGML's rope (weights and biases; n_head: the kv heads for k)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w, n_head):
    """Undo permute_qk."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tokenizer_state_json(state):
    """A tokenizer state (tokenizer.tokenizer's to_state) -> STATE_KEY's JSON."""
    return json.dumps({k: ({"base64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v)
                       for k, v in state.items()}, ensure_ascii=False)


def tokenizer_state(value, where):
    """STATE_KEY's JSON -> the tokenizer state it holds (bytes restored); damaged: one line naming where."""
    try:
        state = json.loads(value)
        return {k: (base64.b64decode(v["base64"]) if isinstance(v, dict) and set(v) == {"base64"} else v)
                for k, v in state.items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{where}: its {STATE_KEY} entry is damaged ({type(e).__name__}); export the file "
                        "again") from None


def _gguf_fields(reader):
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            out[key] = field.contents()
        except Exception:
            continue
    return out


def import_gguf(path, dtype=torch.float32):
    """A llama-architecture GGUF file -> (state_dict, ModelConfig, Tokenizer), tensors dequantized to float32."""
    import gguf                 # gguf: ~0.3 s of start-up, only when a GGUF is read
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise UserError(f"{path}: not a readable GGUF file ({type(e).__name__}: {str(e)[:100]})") from None
    meta = _gguf_fields(reader)
    arch = meta.get("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise UserError(f"{path}: GGUF architecture {arch!r} is not supported (llama, qwen2)")

    def get(key, default=None):
        return meta.get(f"{arch}.{key}", default)
    scaling = get("rope.scaling.type")
    if (scaling not in (None, "none", "linear") or (scaling == "linear" and get("rope.scaling.factor", 1.0) != 1.0)
            or any(t.name == "rope_freqs.weight" for t in reader.tensors)):
        raise UserError(f"{path}: rope scaling is not supported (TinyMind uses plain rope)")
    own = meta.get(STATE_KEY)                # written by TinyMind (interop/gguf_export.py): the exact tokenizer
    if own is None and meta.get("tokenizer.ggml.model") != "gpt2":
        raise UserError(f"{path}: tokenizer type {meta.get('tokenizer.ggml.model')!r} is not supported "
                        "(only GPT-2-style byte-level BPE, tokenizer.ggml.model == 'gpt2', or a GGUF TinyMind wrote)")
    tokens = meta["tokenizer.ggml.tokens"]
    heads = int(get("attention.head_count"))
    kv_heads = int(get("attention.head_count_kv", heads))
    hidden = int(get("embedding_length"))

    state = {}
    for t in reader.tensors:
        name = gguf_to_hf_name(t.name)
        if name is None:
            raise UserError(f"{path}: unexpected tensor {t.name!r}")
        try:
            w = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise UserError(f"{path}: tensor {t.name} has type {t.tensor_type.name}, which gguf cannot dequantize") from None
        w = np.asarray(w, dtype=np.float32).reshape(tuple(reversed([int(x) for x in t.shape])))
        if arch == "llama" and t.name.split(".")[-2] in ("attn_q", "attn_k"):
            w = unpermute_qk(w, heads if ".attn_q." in t.name else kv_heads)
        state[name] = torch.from_numpy(np.array(w, dtype=np.float32, copy=True)).to(dtype)

    head_dim = int(get("attention.key_length", hidden // heads))
    tied = "lm_head.weight" not in state
    config = ModelConfig(
        vocab_size=int(state["model.embed_tokens.weight"].shape[0]), hidden_size=hidden,
        num_hidden_layers=int(get("block_count")), num_attention_heads=heads, num_key_value_heads=kv_heads,
        intermediate_size=int(get("feed_forward_length")), head_dim=head_dim,
        max_position_embeddings=int(get("context_length", 4096)), rope_theta=float(get("rope.freq_base", 10000.0)),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)), attention_bias=arch == "qwen2",
        tie_word_embeddings=tied, model_type=arch)

    tokenizer = tokenizer_from(meta, tokens, path) if own is None else \
        load_tokenizer_from_state(tokenizer_state(own, path), where=str(path))
    check_keys(state, config, str(path))
    config.bos_token_id = tokenizer.bos_id if tokenizer.bos_id is not None else -1
    config.eos_token_id, config.pad_token_id = tokenizer.eos_id, tokenizer.pad_id
    return state, config, tokenizer


def tokenizer_from(meta, tokens, path):
    """The byte-level BPE tokenizer (GGUFBPETokenizer) of a GGUF file's tokenizer.ggml.* fields."""
    eos = int(meta.get("tokenizer.ggml.eos_token_id", 0))
    pad = meta.get("tokenizer.ggml.padding_token_id")
    bos = meta.get("tokenizer.ggml.bos_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
    eos_str = tokens[eos]
    tpl = chat_template_from_jinja(meta.get("tokenizer.chat_template"), tokens[bos] if bos is not None else "",
                                   eos_str, where=str(path))
    return GGUFBPETokenizer(tokens, meta.get("tokenizer.ggml.merges", []), meta.get("tokenizer.ggml.token_type"),
                            meta.get("tokenizer.ggml.pre", "default"), eos, int(pad) if pad is not None else None,
                            int(bos) if bos is not None else None, add_bos, tpl)

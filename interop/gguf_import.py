"""Import llama-architecture GGUF files (llama.cpp's format; F32/F16/BF16 and the quantised types gguf can
dequantize) with their embedded vocabulary, merges and chat template. Every metadata key read
(interop/gguf_meta.py) and every tensor's name, type and shape are checked before any weight is: a damaged
or foreign file is one line naming the key or tensor. Library module; the CLI is
scripts/convert_model.py --from_gguf FILE / --smollm2 (inference/load.py loads a .gguf with it too).

    from interop.gguf_import import import_gguf
    state, config, tokenizer = import_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
"""
import base64
import json
from pathlib import Path

import numpy as np
import torch

from core.errors import UserError
from interop.gguf_meta import ARCHITECTURES, MISSING, REDO, GGUFMeta, read_config
from interop.hf import check_keys, expected_shapes
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


# the metadata keys that size each tensor, for the line that says a tensor's shape is not theirs
_ATTN, _KV, _FFN = ("embedding_length, attention.head_count and attention.key_length",
                    "embedding_length, attention.head_count_kv and attention.key_length",
                    "embedding_length and feed_forward_length")
SIZED_BY = {"token_embd": "embedding_length and the count of tokenizer.ggml.tokens", "attn_q": _ATTN,
            "attn_output": _ATTN, "attn_k": _KV, "attn_v": _KV, "ffn_gate": _FFN, "ffn_up": _FFN, "ffn_down": _FFN}


def import_gguf(path, dtype=torch.float32):
    """A llama-architecture GGUF file -> (state_dict, ModelConfig, Tokenizer), tensors dequantized to float32.
    Every key read and every tensor's name, type and shape are checked before any tensor is: a damaged or
    foreign file is one line (core.errors.UserError) naming the file and the key or tensor."""
    import gguf                 # gguf: ~0.3 s of start-up, only when a GGUF is read
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise UserError(f"{path}: not a readable GGUF file ({type(e).__name__}: {str(e)[:100]})") from None
    meta = GGUFMeta(reader, path)
    arch = meta.get("general.architecture", str)
    if arch not in ARCHITECTURES:
        raise UserError(f"{path}: GGUF architecture {arch!r} is not supported ({', '.join(ARCHITECTURES)})")
    if any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise UserError(f"{path}: rope scaling (tensor rope_freqs.weight) is not supported (TinyMind uses plain rope)")
    own = meta.get(STATE_KEY, str, None)     # written by TinyMind (interop/gguf_export.py): the exact tokenizer
    if own is None and meta.get("tokenizer.ggml.model", str, None) != "gpt2":
        raise UserError(f"{path}: tokenizer type {meta.values.get('tokenizer.ggml.model')!r:.40} is not supported "
                        "(only GPT-2-style byte-level BPE, tokenizer.ggml.model == 'gpt2', or a GGUF TinyMind wrote)")
    tokens = meta.get("tokenizer.ggml.tokens", "strings")
    config = read_config(meta, arch, len(tokens), tied=all(t.name != "output.weight" for t in reader.tensors))
    check_tensors(reader, config, path)
    tokenizer = tokenizer_from(meta, tokens) if own is None else \
        load_tokenizer_from_state(tokenizer_state(own, path), where=str(path))
    if tokenizer.vocab_size > len(tokens):
        raise UserError(f"{path}: its {STATE_KEY} tokenizer has {tokenizer.vocab_size} tokens but "
                        f"tokenizer.ggml.tokens {len(tokens)}; {REDO}")
    state = {}
    for t in reader.tensors:                # checked above: every name known, every shape the config's
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        w = np.asarray(w, dtype=np.float32).reshape(tuple(reversed([int(x) for x in t.shape])))
        if arch == "llama" and t.name.split(".")[-2] in ("attn_q", "attn_k"):
            w = unpermute_qk(w, config.num_attention_heads if ".attn_q." in t.name else config.num_key_value_heads)
        state[gguf_to_hf_name(t.name)] = torch.from_numpy(np.array(w, dtype=np.float32, copy=True)).to(dtype)
    check_keys(state, config, str(path))
    config.bos_token_id = tokenizer.bos_id if tokenizer.bos_id is not None else -1
    config.eos_token_id, config.pad_token_id = tokenizer.eos_id, tokenizer.pad_id
    return state, config, tokenizer


def check_tensors(reader, config, path):
    """Every tensor a model of config has and no other, each of the shape the config gives it and of a type
    gguf dequantizes, checked on the file's header before any tensor is read."""
    import gguf                 # gguf: ~0.3 s of start-up, only when a GGUF is read
    arch, layers = config.model_type, config.num_hidden_layers
    found = {}
    for t in reader.tensors:
        name = gguf_to_hf_name(t.name)
        block = t.name.split(".")[1] if t.name.startswith("blk.") else "0"
        if name is None or not block.isdigit():
            raise UserError(f"{path}: tensor {t.name} is not one a {arch} model has (token_embd, output_norm, "
                            f"output, blk.N.{{attn_q,attn_k,attn_v,attn_output,ffn_*,*_norm}}); {REDO}")
        if int(block) >= layers:
            raise UserError(f"{path}: tensor {t.name} is beyond GGUF key {arch}.block_count {layers} (blocks 0 to "
                            f"{layers - 1}); {REDO}")
        found[name] = t
    blocks = len({n.split(".")[2] for n in found if n.startswith("model.layers.")})
    if blocks < layers:
        raise UserError(f"{path}: GGUF key {arch}.block_count is {layers} but the file holds tensors of {blocks} "
                        f"blocks; {REDO}")
    want = expected_shapes(config)          # block_count is bounded by the tensors now: a cheap meta model
    for name, shape in want.items():
        t = found.get(name)
        if t is None:
            raise UserError(f"{path}: tensor {hf_to_gguf_name(name)} is missing (a {arch} model of these keys has "
                            f"it); {REDO}")
        if tuple(int(x) for x in reversed(t.shape)) != shape:
            keys = SIZED_BY.get(t.name.split(".")[-2], SIZED_BY["token_embd"] if t.name == "output.weight"
                                else "embedding_length")
            raise UserError(f"{path}: tensor {t.name} has shape {[int(x) for x in t.shape]} (GGUF order), not the "
                            f"{list(reversed(shape))} that the keys {keys} give; {REDO}")
    for name, t in found.items():
        if name not in want:
            raise UserError(f"{path}: tensor {t.name} is not one a {arch} model of these keys has; {REDO}")
    for qtype in {t.tensor_type for t in reader.tensors}:
        try:                    # one block of zeros: can gguf dequantize this type at all?
            gguf.quants.dequantize(np.zeros((1, gguf.GGML_QUANT_SIZES[qtype][1]), np.uint8), qtype)
        except (NotImplementedError, KeyError, ValueError):
            bad = next(t.name for t in reader.tensors if t.tensor_type == qtype)
            raise UserError(f"{path}: tensor {bad} has type {qtype.name}, which gguf cannot dequantize; "
                            "convert the model to GGUF with F32, F16, BF16 or a Q* type") from None


def tokenizer_from(meta, tokens):
    """The byte-level BPE tokenizer (GGUFBPETokenizer) of a GGUF file's tokenizer.ggml.* fields, each checked."""
    n, path = len(tokens), meta.path
    eos = meta.token_id("tokenizer.ggml.eos_token_id", n, MISSING)
    pad = meta.token_id("tokenizer.ggml.padding_token_id", n)
    bos = meta.token_id("tokenizer.ggml.bos_token_id", n)
    add_bos = meta.get("tokenizer.ggml.add_bos_token", bool, False) and bos is not None
    types = meta.get("tokenizer.ggml.token_type", "ints")
    if len(types) != n:
        raise meta.bad("tokenizer.ggml.token_type", f"has {len(types)} entries, not one per token ({n})")
    merges = meta.get("tokenizer.ggml.merges", "strings")
    template, pre = meta.get("tokenizer.chat_template", str, None), meta.get("tokenizer.ggml.pre", str, "default")
    tpl = chat_template_from_jinja(template, tokens[bos] if bos is not None else "", tokens[eos], where=str(path))
    try:
        return GGUFBPETokenizer(tokens, merges, types, pre, eos, pad, bos, add_bos, tpl)
    except MemoryError:
        raise
    except Exception as e:      # the vocabulary comes from a file: whatever the tokenizers library refuses is damage
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise UserError(f"{path}: its tokenizer.ggml.* vocabulary cannot be built ({type(e).__name__}: {first}); "
                        f"{REDO}") from None

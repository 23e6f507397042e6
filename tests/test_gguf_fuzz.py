"""GGUF import under damage: 250 files mutated (seeded) from tiny GGUFs written by TinyMind's own export
(llama f32 and qwen2 q8_0, a byte-level BPE vocabulary): metadata keys deleted, their values or types
changed, another architecture's keys, tensors renamed, dropped, reshaped or retyped. Each file either
imports (and loads, and runs) or gives one UserError line naming the file; nothing else. Plus the named
cases, each with its line, through scripts/convert_model.py --from_gguf.

    pytest tests/test_gguf_fuzz.py
"""
import random
import re

import numpy as np
import pytest
import torch

from checkpoint.pth import build_model, save_checkpoint
from core.errors import UserError
from interop.gguf_export import export_gguf
from interop.gguf_import import import_gguf
from model.config import ModelConfig
from model.model import TinyMindForCausalLM
from test_convert import train_bpe, write_gguf

gguf = pytest.importorskip("gguf")
V = gguf.GGUFValueType
FILES = 250
NEEDED = ["general.architecture", "{a}.block_count", "{a}.embedding_length", "{a}.feed_forward_length",
          "{a}.attention.head_count", "{a}.attention.head_count_kv", "{a}.attention.key_length",
          "{a}.attention.value_length", "{a}.rope.dimension_count", "{a}.context_length", "{a}.rope.freq_base",
          "{a}.attention.layer_norm_rms_epsilon", "{a}.vocab_size", "tokenizer.ggml.model", "tokenizer.ggml.tokens",
          "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id",
          "tokenizer.ggml.padding_token_id", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token",
          "tokenizer.chat_template", "tinymind.tokenizer"]
KINDS = ["attn_norm", "ffn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Two tiny GGUFs TinyMind's export wrote: llama f32 tied, qwen2 q8_0 untied (q/k/v biases), with a
    byte-level BPE vocabulary of 300 (few strings: gguf's reader reads them one by one)."""
    from tokenizers import Tokenizer
    d = tmp_path_factory.mktemp("gguf_bases")
    bpe_json = train_bpe(vocab_size=300)
    vocab = Tokenizer.from_str(bpe_json).get_vocab_size()
    small = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=64, rope_theta=10000.0, max_position_embeddings=128)
    torch.manual_seed(0)
    big = ModelConfig(**{**small, "hidden_size": 64, "intermediate_size": 96})     # write_gguf's own shape
    write_gguf(d / "src.gguf", TinyMindForCausalLM(big).state_dict(), bpe_json)
    tok = import_gguf(d / "src.gguf")[2]
    out = []
    for name, kind, extra in (("llama", "f32", {}), ("qwen2", "q8_0", dict(attention_bias=True, model_type="qwen2",
                                                                          tie_word_embeddings=False))):
        cfg = ModelConfig(**small, **extra)
        save_checkpoint(d / f"{name}.pth", TinyMindForCausalLM(cfg).state_dict(), cfg, tok, {"stage": "imported"})
        out.append(export_gguf(d / f"{name}.pth", d / f"{name}.gguf", kind))
    return out


def read(path):
    """A GGUF -> ({key: [types, value]}, [[name, data, type], ...]), as rewrite takes them."""
    r = gguf.GGUFReader(str(path))
    kv = {k: [list(f.types), f.contents()] for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return kv, [[t.name, np.array(t.data), t.tensor_type] for t in r.tensors]


def rewrite(path, kv, tensors):
    w = gguf.GGUFWriter(str(path), "llama")
    w.kv_data[0].clear()                            # general.architecture too: it is one of the values
    for key, (types, value) in kv.items():
        w.add_key_value(key, value, types[0], sub_type=types[1] if len(types) > 1 else None)
    for name, data, qtype in tensors:
        plain = qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
        w.add_tensor(name, data, raw_dtype=None if plain else qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def pick_key(kv, rng):
    arch = kv.get("general.architecture", [None, "llama"])[1]
    needed = [k.format(a=arch) for k in NEEDED if k.format(a=arch) in kv]
    return rng.choice(needed if needed and rng.random() < 0.8 else sorted(kv))


def other_value(types, value, rng):
    """Another value of the same GGUF type: zero, negative, huge, off by one, NaN, another string, shorter."""
    t = types[0]
    if t in (V.UINT8, V.UINT16, V.UINT32, V.UINT64):
        return types, rng.choice([0, 1, 3, 7, value + 1, max(value - 1, 0), value * 2, 2 ** 31 - 1, 4_000_000_000])
    if t in (V.INT8, V.INT16, V.INT32, V.INT64):
        return types, rng.choice([0, -1, -value, value + 1, 2 ** 31 - 1])
    if t in (V.FLOAT32, V.FLOAT64):
        return types, rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30, 1e-30])
    if t == V.BOOL:
        return types, not value
    if t == V.STRING:
        return types, rng.choice(["", "gpt2", "llama", "qwen2", "bert", "mamba", "yarn", "linear", "{{ oops",
                                  "not json", '{"type": "gguf_bpe"}', value[: len(value) // 2], value + "x"])
    cut = max(1, len(value) - rng.choice([1, 2, len(value) // 2]))
    return types, rng.choice([value[:cut], value + value[-1:], list(reversed(value))])


def other_type(types, value, rng):
    """The value written as another GGUF type: a string, an int, a float, a bool, an array, a scalar."""
    first = value[0] if isinstance(value, list) else value
    if isinstance(value, list):
        options = [([V.STRING], str(first)), ([V.UINT32], 7), ([V.ARRAY, V.INT32], list(range(len(value)))),
                   ([V.ARRAY, V.STRING], [str(x) for x in value])]
    else:
        options = [([V.STRING], str(value)), ([V.UINT32], 7), ([V.INT32], -3), ([V.FLOAT32], 2.5),
                   ([V.BOOL], True), ([V.ARRAY, V.UINT32], [4, 4])]
    return rng.choice([o for o in options if o[0] != types] or options)


def mutate_meta(kv, tensors, rng):
    key = pick_key(kv, rng)
    how = rng.choice(["delete", "value", "type", "arch"])
    if how == "delete":
        del kv[key]
        return f"deleted {key}"
    if how in ("value", "type"):
        kv[key] = list((other_value if how == "value" else other_type)(*kv[key], rng))
        return f"{key} = {str(kv[key][1])[:40]!r} ({kv[key][0][0].name})"
    arch, new = kv.get("general.architecture", [None, "llama"])[1], rng.choice(["qwen2", "llama", "gemma", "phi3"])
    if rng.random() < 0.5:                  # another architecture's keys
        for k in [k for k in kv if k.startswith(f"{arch}.")]:
            kv[f"{new}.{k[len(arch) + 1:]}"] = kv.pop(k)
        return f"keys {arch}.* renamed {new}.*"
    kv["general.architecture"] = [[V.STRING], new]
    return f"general.architecture = {new}"


def mutate_tensor(kv, tensors, rng):
    i = rng.randrange(len(tensors))
    name, data, qtype = tensors[i]
    how = rng.choice(["rename", "drop", "shape", "type", "add"])
    if how == "rename":
        tensors[i][0] = rng.choice([f"blk.{rng.randrange(4)}.{rng.choice(KINDS)}.weight", "output.weight",
                                    "rope_freqs.weight", "blk.0.attn_qkv.weight", "blk.x.attn_q.weight",
                                    name.replace(".weight", ".bias"), name + "s", "token_embd.weight"])
        return f"tensor {name} renamed {tensors[i][0]}"
    if how == "drop":
        del tensors[i]
        return f"tensor {name} dropped"
    if how == "shape":
        shapes = [data[:-1], data[None], data.reshape(-1)]
        if data.ndim == 2 and qtype.name == "F32":
            shapes += [data.T, data[:, :-1]]
        tensors[i][1] = np.ascontiguousarray(rng.choice(shapes))
        return f"tensor {name} reshaped {tensors[i][1].shape}"
    if how == "type" and qtype.name == "F32":
        dtype = rng.choice([np.float16, np.int32, np.float64])
        tensors[i][1:] = [data.astype(dtype), getattr(gguf.GGMLQuantizationType,
                                                       {np.float16: "F16", np.int32: "I32", np.float64: "F64"}[dtype])]
        return f"tensor {name} as {tensors[i][2].name}"
    new = rng.choice(["output.weight", "blk.2.attn_q.weight", "blk.0.ffn_gate_exps.weight"])
    tensors.append([new, np.zeros((64, 32), np.float32), gguf.GGMLQuantizationType.F32])
    return f"tensor {new} added"


def write_mutated(path, base, rng):
    """Write one mutated copy of base (read()'s pair) to path (1 to 3 mutations; half the files lose
    tinymind.tokenizer, so that the GGUF vocabulary itself is read) -> what was done."""
    while True:
        kv, tensors = {k: list(v) for k, v in base[0].items()}, [list(t) for t in base[1]]
        done = []
        if rng.random() < 0.5:
            del kv["tinymind.tokenizer"]
            done.append("no tinymind.tokenizer")
        for _ in range(rng.choice([1, 1, 2, 3])):
            done.append((mutate_meta if rng.random() < 0.6 else mutate_tensor)(kv, tensors, rng))
        try:
            rewrite(path, kv, tensors)
            return "; ".join(done)
        except (ValueError, TypeError, OverflowError, KeyError, AttributeError):   # the writer refused it
            continue


def load_mutated(path):
    """Import one file and, when it imports, build and run its model -> None, or the UserError's line."""
    try:
        state, config, tok = import_gguf(path)
    except UserError as e:
        return str(e)
    model = build_model(config, state, where=str(path))
    with torch.no_grad():
        model(torch.tensor([tok.encode("hello 你好")[:4] or [0]]))
    return None


def test_mutated_ggufs_import_or_give_one_line(tmp_path, bases, one_thread):
    rng, bases = random.Random(25), [read(b) for b in bases]
    outcomes, crashes = [], []
    for n in range(FILES):
        path = tmp_path / f"m{n}.gguf"
        what = write_mutated(path, bases[n % len(bases)], rng)
        try:
            msg = load_mutated(path)
        except Exception as e:
            crashes.append(f"{what}: {type(e).__name__}: {e}")
            continue
        outcomes.append(msg)
        assert msg is None or ("\n" not in msg and msg.startswith(f"{path}: ")), (what, msg)
        path.unlink()
    assert not crashes, f"{len(crashes)} crashes:\n" + "\n".join(crashes[:20])
    refused = sum(m is not None for m in outcomes)
    assert refused > FILES // 2 and FILES - refused > 10, refused       # the mutations do reach the checks


REDO = "the file is damaged or not of a supported model: convert it again (llama.cpp's convert_hf_to_gguf.py)"


def set_kv_heads_zero(kv, tensors):
    kv["llama.attention.head_count_kv"][1] = 0


def drop_ffn_length(kv, tensors):
    del kv["llama.feed_forward_length"]


def qwen2_keys(kv, tensors):
    for k in [k for k in kv if k.startswith("llama.")]:
        kv["qwen2." + k[6:]] = kv.pop(k)


def rename_tensor(kv, tensors):
    next(t for t in tensors if t[0] == "blk.1.attn_k.weight")[0] = "blk.1.attn_kk.weight"


@pytest.mark.parametrize("damage,line", [
    (set_kv_heads_zero, "GGUF key llama.attention.head_count_kv is 0, not a count from 1 to 4"),
    (drop_ffn_length, "GGUF key llama.feed_forward_length is missing"),
    (qwen2_keys, "GGUF key llama.embedding_length is missing (the file has qwen2.embedding_length: its keys are "
                 "for another architecture than its general.architecture 'llama')"),
    (rename_tensor, "tensor blk.1.attn_kk.weight is not one a llama model has (token_embd, output_norm, output, "
                    "blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_*,*_norm})"),
])
def test_the_reported_damage_is_one_line(tmp_path, bases, capsys, monkeypatch, damage, line):
    """The issue's cases through convert_model.py --from_gguf (one line, exit 2, no --out written) and
    through inference/load.py, which every command that takes a .gguf uses."""
    from inference.load import load_for_inference
    from test_gguf import convert
    kv, tensors = read(bases[0])
    damage(kv, tensors)
    gg = tmp_path / "damaged.gguf"
    rewrite(gg, kv, tensors)
    code, out, err = convert(["--from_gguf", gg, "--out", tmp_path / "m.pth"], capsys, monkeypatch)
    assert code == 2 and err.splitlines() == [f"error: {gg}: {line}; {REDO}"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.gguf"]
    with pytest.raises(UserError, match="^" + re.escape(f"{gg}: {line}")):
        load_for_inference(gguf_path=gg)

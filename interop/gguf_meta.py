"""A GGUF file's metadata read with checks, and the ModelConfig its keys describe: each key the import reads
is present, of the right type, in a sane range and consistent with the others, before anything is
allocated (interop/gguf_import.py then checks the tensors against that config). Each failure is one line
naming the file, the key, what was expected and what to do. Library module, used by interop/gguf_import.py.

    meta = GGUFMeta(gguf.GGUFReader(path), path)
    config = read_config(meta, "llama", n_vocab=len(tokens), tied=True)
"""
import math

from core.errors import UserError
from model.config import ModelConfig

ARCHITECTURES = ("llama", "qwen2")
REDO = "the file is damaged or not of a supported model: convert it again (llama.cpp's convert_hf_to_gguf.py)"
MISSING = object()
KINDS = {int: "an integer", float: "a finite number", str: "a string", bool: "a boolean",
         "strings": "a non-empty array of strings", "ints": "an array of integers"}


def _is(value, kind):
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "strings":
        return isinstance(value, list) and bool(value) and all(isinstance(x, str) for x in value)
    if kind == "ints":
        return isinstance(value, list) and all(_is(x, int) for x in value)
    return isinstance(value, kind)


class GGUFMeta:
    """A GGUF file's metadata values (the GGUF.* header entries left out), each read with its checks."""

    def __init__(self, reader, path):
        self.path, self.values = path, {}
        for key, field in reader.fields.items():
            if key.startswith("GGUF."):
                continue
            try:
                self.values[key] = field.contents()
            except Exception:       # a value gguf cannot decode counts as absent: the key's own check says so
                continue

    def bad(self, key, what):
        return UserError(f"{self.path}: GGUF key {key} {what}; {REDO}")

    def get(self, key, kind, default=MISSING):
        """The value of key if it is of kind (int, float, str, bool, "strings", "ints"); absent: default,
        or one line when there is none."""
        value = self.values.get(key, MISSING)
        if value is MISSING:
            if default is MISSING:
                raise self.bad(key, "is missing" + self._elsewhere(key))
            return default
        if not _is(value, kind):
            shown = f"an array of {len(value)}" if isinstance(value, list) else f"{value!r:.40}"
            raise self.bad(key, f"is {shown} ({type(value).__name__}), not {KINDS[kind]}")
        return value

    def _elsewhere(self, key):
        """' (the file has qwen2.block_count ...)' when the key is there under another architecture's name."""
        arch, _, rest = key.partition(".")
        others = sorted(k for k in self.values if k.endswith("." + rest) and k.split(".")[0] != arch)
        if arch in ARCHITECTURES and others:
            return (f" (the file has {others[0]}: its keys are for another architecture than its "
                    f"general.architecture {arch!r})")
        return ""

    def count(self, key, default=MISSING, high=2 ** 31 - 1):
        """A positive integer (a size, a count), at most high."""
        value = self.get(key, int, default)
        if not 1 <= value <= high:
            raise self.bad(key, f"is {value}, not a count from 1 to {high}")
        return value

    def positive(self, key, default):
        """A positive finite number (a rope base, an epsilon)."""
        value = self.get(key, float, default)
        if value <= 0:
            raise self.bad(key, f"is {value}, not a positive number")
        return float(value)

    def token_id(self, key, n_tokens, default=None):
        """A token id: an integer below the token count."""
        value = self.get(key, int, default)
        if value is not None and not 0 <= value < n_tokens:
            raise self.bad(key, f"is {value}, not a token id (0 to {n_tokens - 1}, the tokenizer.ggml.tokens)")
        return value


def read_config(meta, arch, n_vocab, tied):
    """The ModelConfig an {arch}.* key set describes (the vocabulary: the tokenizer.ggml.tokens count)."""
    a = arch + "."
    if meta.get(a + "expert_count", int, 0):
        raise UserError(f"{meta.path}: a mixture-of-experts GGUF ({a}expert_count {meta.values[a + 'expert_count']}) "
                        "is not supported; import a dense llama or qwen2 model")
    check_rope(meta, a)
    hidden = meta.count(a + "embedding_length")
    heads = meta.count(a + "attention.head_count", high=hidden)
    kv_heads = meta.count(a + "attention.head_count_kv", heads, high=heads)
    if heads % kv_heads:
        raise meta.bad(a + "attention.head_count_kv", f"is {kv_heads}, which does not divide attention.head_count "
                       f"{heads}")
    if a + "attention.key_length" not in meta.values and hidden % heads:
        raise meta.bad(a + "attention.head_count", f"is {heads}, which does not divide embedding_length {hidden} "
                       "(and there is no attention.key_length)")
    head_dim = meta.count(a + "attention.key_length", hidden // heads)
    if head_dim % 2:
        raise meta.bad(a + "attention.key_length", f"is {head_dim}: rope needs an even head size")
    for key in ("attention.value_length", "rope.dimension_count"):
        if meta.count(a + key, head_dim) != head_dim:
            raise meta.bad(a + key, f"is {meta.values[a + key]}, not the head size {head_dim} (TinyMind has one "
                           "head size and rotates all of it)")
    if meta.count(a + "vocab_size", n_vocab) != n_vocab:
        raise meta.bad(a + "vocab_size", f"is {meta.values[a + 'vocab_size']} but tokenizer.ggml.tokens holds "
                       f"{n_vocab} tokens")
    try:
        return ModelConfig(
            vocab_size=n_vocab, hidden_size=hidden, num_hidden_layers=meta.count(a + "block_count"),
            num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
            intermediate_size=meta.count(a + "feed_forward_length"),
            max_position_embeddings=meta.count(a + "context_length", 4096),
            rope_theta=meta.positive(a + "rope.freq_base", 10000.0),
            rms_norm_eps=meta.positive(a + "attention.layer_norm_rms_epsilon", 1e-5),
            attention_bias=arch == "qwen2", tie_word_embeddings=tied, model_type=arch)
    except ValueError as e:         # ModelConfig's own consistency checks: the keys above should cover them
        raise UserError(f"{meta.path}: its {arch} keys describe no model TinyMind can build ({e}); {REDO}") from None


def check_rope(meta, a):
    """Plain rope only: no scaling type but none or linear of factor 1."""
    scaling = meta.get(a + "rope.scaling.type", str, "none")
    factor = meta.get(a + "rope.scaling.factor", float, 1.0)
    if scaling not in ("none", "linear") or (scaling == "linear" and factor != 1.0):
        raise UserError(f"{meta.path}: rope scaling ({a}rope.scaling.type {scaling!r}) is not supported "
                        "(TinyMind uses plain rope)")

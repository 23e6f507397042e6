"""Tokenizer backends for imported models: a Hugging Face tokenizer.json, the byte-level BPE vocabulary
embedded in a GGUF file, and a model's own sentencepiece tokenizer.model; plus the mapping between a
model's jinja chat template and TinyMind's ChatTemplate.

Used by interop/hf.py (`python scripts/convert_model.py --from_hf DIR | --from_gguf FILE`). Every
backend serialises itself to bytes and strings (to_state) so a checkpoint stays self-contained and
loads with torch.load(weights_only=True); tokenizer.tokenizer.BACKENDS maps the state's "type" back here
(this module builds on tokenizer/base.py and never imports tokenizer/tokenizer.py).
"""
import json

from core.errors import UserError
from tokenizer.base import WHITESPACE_MARK, ChatTemplate, SentencePieceTokenizer, Tokenizer


class HFTokenizer(Tokenizer):
    """A `tokenizers` Tokenizer (tokenizer.json). encode() never turns text into special tokens;
    encode_special() (the base class's) splits on them first."""

    type_name = "hf_json"

    def __init__(self, tokenizer_json, eos_token, pad_token=None, bos_token=None, add_bos=False,
                 chat_template=None):
        from tokenizers import Tokenizer as _Tok
        self.tokenizer_json = tokenizer_json
        self.tok = _Tok.from_str(tokenizer_json)
        self.tok.encode_special_tokens = True          # "<|im_end|>" typed by a user stays plain text
        self.tok.no_truncation()
        self.tok.no_padding()
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.special_tokens = {t.content: i for i, t in self.tok.get_added_tokens_decoder().items()
                               if t.special}
        self.eos_token, self.pad_token, self.bos_token, self.add_bos = eos_token, pad_token, bos_token, add_bos
        self.eos_id = self._id(eos_token, "eos")
        self.pad_id = self._id(pad_token, "pad") if pad_token else self.eos_id
        self.bos_id = self._id(bos_token, "bos") if (bos_token and add_bos) else None
        for tok, i in ((eos_token, self.eos_id), (pad_token, self.pad_id), (bos_token, self.bos_id)):
            if tok and i is not None:
                self.special_tokens.setdefault(tok, i)
        self.chat_template = chat_template or ChatTemplate()

    def _id(self, token, what):
        i = self.tok.token_to_id(token)
        if i is None:
            raise UserError(f"tokenizer: {what} token {token!r} is not in the vocabulary")
        return i

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def to_hf_json(self):
        """tokenizer.json text for export (special tokens matched in text, as transformers expects)."""
        return self.tokenizer_json

    def to_state(self):
        return {"type": self.type_name, "tokenizer_json": self.tokenizer_json, "eos_token": self.eos_token,
                "pad_token": self.pad_token or "", "bos_token": self.bos_token or "",
                "add_bos": bool(self.add_bos), "chat_template": self.chat_template.to_dict()}

    @classmethod
    def from_state(cls, state):
        return cls(state["tokenizer_json"], state["eos_token"], state["pad_token"] or None,
                   state["bos_token"] or None, state["add_bos"], ChatTemplate.from_dict(state["chat_template"]))


# llama.cpp's pre-tokenizer names (tokenizer.ggml.pre) -> how text is split before byte-level BPE.
# See llama.cpp src/llama-vocab.cpp (llm_tokenizer_bpe); "default"/"gpt2" is GPT-2's own regex.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GGUF_PRE_SPLITS = {
    "default": [_GPT2_SPLIT], "gpt2": [_GPT2_SPLIT],
    # digits one by one, then GPT-2's regex
    "smollm": [r"\p{N}", _GPT2_SPLIT], "starcoder": [r"\p{N}", _GPT2_SPLIT], "refact": [r"\p{N}", _GPT2_SPLIT],
    "llama3": [_LLAMA3_SPLIT], "llama-bpe": [_LLAMA3_SPLIT], "llama-v3": [_LLAMA3_SPLIT],
    "smaug-bpe": [_LLAMA3_SPLIT], "dbrx": [_LLAMA3_SPLIT],
    "qwen2": [_QWEN2_SPLIT], "deepseek-r1-qwen": [_QWEN2_SPLIT],
}
GGUF_CONTROL, GGUF_USER_DEFINED = 3, 4


def build_byte_level_bpe(tokens, merges, token_types, pre="default"):
    """A byte-level BPE `tokenizers` object from GGUF vocabulary arrays; returns its JSON text."""
    from tokenizers import AddedToken, Regex, Tokenizer as _Tok, decoders, models, pre_tokenizers
    if pre not in GGUF_PRE_SPLITS:
        print(f"warning: unknown GGUF pre-tokenizer {pre!r}; splitting text with GPT-2's regex")
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    bpe = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, ignore_merges=False)
    tok = _Tok(bpe)
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in GGUF_PRE_SPLITS.get(pre, [_GPT2_SPLIT])]
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        splits + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    types = list(token_types) if token_types is not None else [1] * len(tokens)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == GGUF_CONTROL])
    user = [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == GGUF_USER_DEFINED]
    if user:
        tok.add_tokens(user)
    return tok.to_str()


class GGUFBPETokenizer(HFTokenizer):
    """The GPT-2-style byte-level BPE vocabulary a GGUF file carries (tokenizer.ggml.model == "gpt2").
    Its state keeps the GGUF arrays themselves (strings and ints), rebuilt on load."""

    type_name = "gguf_bpe"

    def __init__(self, tokens, merges, token_types, pre, eos_id, pad_id=None, bos_id=None, add_bos=False,
                 chat_template=None):
        self.gguf = {"tokens": list(tokens), "merges": list(merges), "token_types": [int(t) for t in token_types],
                     "pre": pre}
        text = build_byte_level_bpe(tokens, merges, token_types, pre)
        super().__init__(text, tokens[eos_id], tokens[pad_id] if pad_id is not None else None,
                         tokens[bos_id] if bos_id is not None else None, add_bos, chat_template)

    def to_state(self):
        return {"type": self.type_name, **self.gguf, "eos_id": self.eos_id, "pad_id": self.pad_id,
                "bos_id": self.tok.token_to_id(self.bos_token) if self.bos_token else -1,
                "add_bos": bool(self.add_bos), "chat_template": self.chat_template.to_dict()}

    @classmethod
    def from_state(cls, state):
        bos = state["bos_id"] if state["bos_id"] >= 0 else None
        return cls(state["tokens"], state["merges"], state["token_types"], state["pre"], state["eos_id"],
                   state["pad_id"], bos, state["add_bos"], ChatTemplate.from_dict(state["chat_template"]))


class SentencePieceHFTokenizer(SentencePieceTokenizer):
    """A model's own sentencepiece tokenizer.model (e.g. Llama-2 style), with that model's special
    tokens (eos "</s>", bos "<s>", ...) instead of TinyMind's names."""

    type_name = "sentencepiece_hf"

    def __init__(self, model_bytes, eos_token, pad_token=None, bos_token=None, add_bos=False,
                 chat_template=None):
        super().__init__(model_bytes, chat_template)
        sp = self.sp
        self.special_tokens = {sp.id_to_piece(i): i for i in range(self.vocab_size)
                               if sp.is_control(i) or sp.is_unknown(i)}
        self.eos_token, self.pad_token, self.bos_token, self.add_bos = eos_token, pad_token, bos_token, add_bos

        def pid(piece):
            i = sp.piece_to_id(piece)
            if sp.id_to_piece(i) != piece:
                raise UserError(f"tokenizer.model: special token {piece!r} is not in the vocabulary")
            self.special_tokens[piece] = i
            return i
        self.eos_id = pid(eos_token)
        self.pad_id = pid(pad_token) if pad_token else self.eos_id
        self.bos_id = pid(bos_token) if (bos_token and add_bos) else None

    def to_state(self):
        return {"type": self.type_name, "model": self.model_bytes, "eos_token": self.eos_token,
                "pad_token": self.pad_token or "", "bos_token": self.bos_token or "",
                "add_bos": bool(self.add_bos), "chat_template": self.chat_template.to_dict()}

    @classmethod
    def from_state(cls, state):
        return cls(state["model"], state["eos_token"], state["pad_token"] or None, state["bos_token"] or None,
                   state["add_bos"], ChatTemplate.from_dict(state["chat_template"]))


def sentencepiece_to_hf_json(sp_tokenizer):
    """An HF tokenizer.json equivalent to a sentencepiece BPE model with byte fallback: vocabulary and
    scores from the model, merges recovered from them (best score first, as sentencepiece merges)."""
    from tokenizers import AddedToken, Tokenizer as _Tok, decoders, models, normalizers, pre_tokenizers
    sp = sp_tokenizer.sp
    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    vocab = {p: i for i, p in enumerate(pieces)}
    plain = {i for i in range(n) if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))}
    merges = []
    for i in plain:
        p = pieces[i]
        for k in range(1, len(p)):
            left, right = p[:k], p[k:]
            if vocab.get(left) in plain and vocab.get(right) in plain:
                merges.append((sp.get_score(i), i, vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: (-m[0], m[1], m[2], m[3]))
    unk = pieces[sp.unk_id()] if sp.unk_id() >= 0 else None
    tok = _Tok(models.BPE(vocab=vocab, merges=[(m[4], m[5]) for m in merges], unk_token=unk,
                          fuse_unk=True, byte_fallback=True))
    dummy = sp.encode("a", out_type=str)[:1] == [WHITESPACE_MARK + "a"]
    norm = [normalizers.Replace(" ", WHITESPACE_MARK)]
    if dummy:
        norm.insert(0, normalizers.Prepend(WHITESPACE_MARK))
    tok.normalizer = normalizers.Sequence(norm)
    if sp.encode("a1", out_type=str) != sp.encode("a12", out_type=str)[:-1] or len(sp.encode("2024", out_type=int)) == 4:
        tok.pre_tokenizer = pre_tokenizers.Digits(individual_digits=True)
    dec = [decoders.Replace(WHITESPACE_MARK, " "), decoders.ByteFallback(), decoders.Fuse()]
    if dummy:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    tok.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False)
                            for i in range(n) if sp.is_control(i) or sp.is_unknown(i)])
    return tok.to_str()


# jinja chat templates <-> ChatTemplate
CHATML = dict(name="chatml", bos="", role_prefix="<|im_start|>{role}\n", end="<|im_end|>", sep="\n")
LLAMA3 = dict(name="llama3", bos="<|begin_of_text|>", role_prefix="<|start_header_id|>{role}<|end_header_id|>\n\n",
              end="<|eot_id|>", sep="")
PROBE = [{"role": "system", "content": "SYSTEMTEXT"}, {"role": "user", "content": "USERTEXT"},
         {"role": "assistant", "content": "ASSISTANTTEXT"}, {"role": "user", "content": "AGAIN"}]


def render_jinja(template, messages, add_generation_prompt=False, bos_token="", eos_token=""):
    """Render a chat template the way transformers does (sandboxed jinja2)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise ValueError(msg)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            bos_token=bos_token, eos_token=eos_token)


def render_template(tpl, messages, add_generation_prompt=False, bos_text=""):
    """Our ChatTemplate as text, mirroring encode_chat (for comparing against a jinja template)."""
    messages = list(messages)
    if messages[0]["role"] != "system" and tpl.default_system:
        messages.insert(0, {"role": "system", "content": tpl.default_system})
    out = tpl.bos or bos_text
    for m in messages:
        out += tpl.role_prefix.format(role=m["role"]) + m["content"] + tpl.end + tpl.sep
    if add_generation_prompt:
        out += tpl.role_prefix.format(role="assistant")
    return out


def chat_template_from_jinja(template, bos_token="", eos_token="", where="tokenizer"):
    """Map a model's jinja chat_template to a ChatTemplate: ChatML, Llama-3 headers or Zephyr
    (<|user|>), with the default system prompt the template injects when a conversation has none.
    An unknown or missing template falls back to ChatML with a printed warning."""
    if isinstance(template, list):        # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template}
        template = named.get("default") or next(iter(named.values()), None)
    if not template:
        print(f"warning: {where} has no chat template; using ChatML")
        return ChatTemplate(**CHATML)
    try:                                    # look at what it renders as well as its source
        seen = template + render_jinja(template, PROBE, True, bos_token, eos_token)
    except Exception:
        seen = template
    if "<|im_start|>" in seen:
        fields = dict(CHATML)
    elif "<|start_header_id|>" in seen:
        fields = dict(LLAMA3)
        fields["bos"] = bos_token if "bos_token" in template else fields["bos"]
    elif "<|user|>" in seen:
        fields = dict(name="zephyr", bos="", role_prefix="<|{role}|>\n", end=eos_token or "</s>", sep="\n")
    else:
        print(f"warning: {where}: chat template not recognised (not ChatML, Llama-3 or Zephyr); using ChatML")
        return ChatTemplate(**CHATML)
    tpl = ChatTemplate(**fields)
    try:
        no_system = render_jinja(template, PROBE[1:2], True, bos_token, eos_token)
        start = tpl.bos + tpl.role_prefix.format(role="system")
        if no_system.startswith(start) and tpl.end in no_system[len(start):]:
            tpl.default_system = no_system[len(start):no_system.index(tpl.end, len(start))]
        theirs = render_jinja(template, PROBE, True, bos_token, eos_token)
        ours = render_template(tpl, PROBE, True)
        if theirs.strip() != ours.strip():
            print(f"warning: {where}: chat template mapped to {tpl.name!r} but renders differently:\n"
                  f"  theirs {theirs!r}\n  ours   {ours!r}")
    except Exception as e:                  # a template that needs variables we do not provide
        print(f"warning: {where}: could not render the chat template to check it ({type(e).__name__}: {e})")
    return tpl


def _jinja_str(s):
    return json.dumps(s, ensure_ascii=False)


def chat_template_to_jinja(tpl, bos_text=""):
    """A jinja chat_template that renders exactly what encode_chat produces with `tpl` (bos_text: the
    bos token string when the tokenizer prepends one and the template has no bos of its own)."""
    before, _, after = tpl.role_prefix.partition("{role}")
    bos = tpl.bos or bos_text
    out = ""
    if bos:
        out += "{{ " + _jinja_str(bos) + " }}"
    if tpl.default_system:
        out += ("{% if messages[0]['role'] != 'system' %}{{ " +
                _jinja_str(tpl.role_prefix.format(role="system") + tpl.default_system + tpl.end + tpl.sep) +
                " }}{% endif %}")
    out += ("{% for message in messages %}{{ " + _jinja_str(before) + " + message['role'] + " + _jinja_str(after) +
            " + message['content'] + " + _jinja_str(tpl.end + tpl.sep) + " }}{% endfor %}")
    out += "{% if add_generation_prompt %}{{ " + _jinja_str(tpl.role_prefix.format(role="assistant")) + " }}{% endif %}"
    return out

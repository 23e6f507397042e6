"""Tokenizer backends and THE chat template: every stage, eval, the web demo and any server format
conversations with encode_chat() below, so training and use can never drift apart.

    from model.tokenizer import load_default_tokenizer, encode_chat
    tok = load_default_tokenizer()                       # model/tokenizer.model, shipped
    ids, mask = encode_chat(tok, [{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "hello"}])

A backend is any Tokenizer subclass registered in BACKENDS; it serialises itself to a plain dict
(to_state) that checkpoints carry, so one .pth file is self-contained.
"""
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .errors import UserError

DEFAULT_TOKENIZER_PATH = Path(__file__).resolve().parent / "tokenizer.model"
SPECIAL_TOKENS = {"unk": "<unk>", "pad": "<|pad|>", "eos": "<|endoftext|>",
                  "im_start": "<|im_start|>", "im_end": "<|im_end|>"}
ROLES = ("system", "user", "assistant")
WHITESPACE_MARK = "\u2581"


@dataclass
class ChatTemplate:
    """A chat format as prefix/suffix strings, general enough for ChatML, Llama-3 and Zephyr styles.

    One message renders as role_prefix.format(role=role) + content + end + sep. `end` carries loss on
    assistant turns (the model must learn to stop); `sep` does not. Special-token strings inside these
    fields are parsed to their ids; message content never is.
    """
    name: str = "chatml"
    bos: str = ""                                 # text before the first message ("<s>" for some models)
    role_prefix: str = "<|im_start|>{role}\n"     # opens a message
    end: str = "<|im_end|>"                       # closes a message (and stops generation)
    sep: str = "\n"                               # between messages, no loss
    default_system: Optional[str] = None          # system message used when a conversation has none

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


class Tokenizer:
    """The interface every backend provides."""
    vocab_size: int
    eos_id: int
    pad_id: int
    bos_id: Optional[int] = None
    special_tokens: dict          # string -> id of every special token
    chat_template: ChatTemplate

    def encode(self, text):
        """Text -> ids. Never produces a special token from the text itself."""
        raise NotImplementedError

    def decode(self, ids):
        raise NotImplementedError

    def to_state(self):
        """A dict of plain types (bytes, str, numbers) from which load_tokenizer_from_state rebuilds it."""
        raise NotImplementedError

    def encode_special(self, text):
        """Text in which special-token strings become their ids (for template strings only)."""
        if not text:
            return []
        names = sorted(self.special_tokens, key=len, reverse=True)
        ids = []
        for part in re.split("(" + "|".join(map(re.escape, names)) + ")", text):
            if part in self.special_tokens:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode(part))
        return ids

    @property
    def stop_ids(self):
        """Ids that end a generated reply: the template's end token and end-of-text."""
        stops = {self.eos_id}
        end = self.encode_special(self.chat_template.end)
        if len(end) == 1:
            stops.add(end[0])
        return stops

    @property
    def sha256(self):
        state = self.to_state()
        h = hashlib.sha256()
        for key in sorted(state):
            value = state[key]
            h.update(key.encode())
            h.update(value if isinstance(value, bytes) else json.dumps(value, sort_keys=True).encode())
        return h.hexdigest()


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece BPE model with byte fallback: any text round-trips exactly."""

    def __init__(self, model_bytes, chat_template=None):
        import sentencepiece as spm
        self.model_bytes = bytes(model_bytes)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        self.vocab_size = self.sp.get_piece_size()
        self.special_tokens = {}
        for piece in SPECIAL_TOKENS.values():
            i = self.sp.piece_to_id(piece)
            if self.sp.id_to_piece(i) == piece:
                self.special_tokens[piece] = i
        self.eos_id = self.special_tokens.get(SPECIAL_TOKENS["eos"], self.sp.eos_id())
        self.pad_id = self.special_tokens.get(SPECIAL_TOKENS["pad"], max(self.sp.pad_id(), 0))
        self.bos_id = None
        self.chat_template = chat_template or ChatTemplate()

    def encode(self, text):
        # sentencepiece reads a literal U+2581 as its whitespace marker; spell it in byte tokens instead
        if WHITESPACE_MARK not in text:
            return self.sp.encode(text, out_type=int)
        mark = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in WHITESPACE_MARK.encode()]
        ids = []
        for i, part in enumerate(text.split(WHITESPACE_MARK)):
            if i:
                ids.extend(mark)
            if part:
                ids.extend(self.sp.encode(part, out_type=int))
        return ids

    def decode(self, ids):
        return self.sp.decode([int(i) for i in ids])

    def to_state(self):
        return {"type": "sentencepiece", "model": self.model_bytes,
                "chat_template": self.chat_template.to_dict()}

    @classmethod
    def from_state(cls, state):
        return cls(state["model"], ChatTemplate.from_dict(state["chat_template"]))


# type name -> class with from_state(state); other backends (HF tokenizer.json, GGUF vocab) register here
BACKENDS = {"sentencepiece": SentencePieceTokenizer}


def load_tokenizer_from_state(state):
    kind = state.get("type") if isinstance(state, dict) else None
    if kind not in BACKENDS:
        from . import hf_tokenizer  # noqa: F401  registers the imported-model backends (hf_json, gguf_bpe, ...)
    if kind not in BACKENDS:
        raise UserError(f"unknown tokenizer type {kind!r} in checkpoint; known: {', '.join(BACKENDS)}")
    return BACKENDS[kind].from_state(state)


def load_default_tokenizer(path=DEFAULT_TOKENIZER_PATH):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: tokenizer not found; train one with "
                        "`python trainer/train_tokenizer.py --data_path dataset/pretrain.jsonl`")
    return SentencePieceTokenizer(path.read_bytes())


def train_tokenizer(texts, vocab_size=6400, out_path=DEFAULT_TOKENIZER_PATH, seed=42, max_sentences=2_000_000):
    """Train a sentencepiece BPE model on an iterable of strings and write it atomically to out_path.

    Identity normalisation, no dummy prefix and byte fallback make decode(encode(x)) == x; the chat
    markers are control symbols, so user text can never forge them.
    """
    import os
    import sentencepiece as spm
    spm.set_random_generator_seed(seed)

    def sentences():
        for text in texts:
            for line in text.split("\n"):       # a newline is always the byte token <0x0A>
                if line.strip():
                    yield line[:4000]

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences(), model_writer=buf, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, character_coverage=0.9995, normalization_rule_name="identity",
        add_dummy_prefix=False, remove_extra_whitespaces=False, split_digits=True,
        allow_whitespace_only_pieces=True, max_sentence_length=16384,
        input_sentence_size=max_sentences, shuffle_input_sentence=True, num_threads=1,
        unk_id=0, pad_id=1, eos_id=2, bos_id=-1, unk_piece=SPECIAL_TOKENS["unk"],
        pad_piece=SPECIAL_TOKENS["pad"], eos_piece=SPECIAL_TOKENS["eos"],
        control_symbols=[SPECIAL_TOKENS["im_start"], SPECIAL_TOKENS["im_end"]],
        minloglevel=2)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out_path)
    return SentencePieceTokenizer(buf.getvalue())


def encode_chat(tokenizer, messages, add_generation_prompt=False, system_prompt=None):
    """THE chat template. messages -> (ids, loss_mask), mask 1 exactly on each assistant reply's content
    tokens and its end token. system_prompt is used when the conversation has no system message (then the
    template's default_system, if any). add_generation_prompt appends the opening of an assistant turn.
    """
    tpl = tokenizer.chat_template
    messages = list(messages)
    if not messages or messages[0].get("role") != "system":
        system = system_prompt if system_prompt is not None else tpl.default_system
        if system:
            messages.insert(0, {"role": "system", "content": system})
    ids, mask = [], []

    def add(new_ids, loss):
        ids.extend(new_ids)
        mask.extend([int(loss)] * len(new_ids))

    if tokenizer.bos_id is not None and not tpl.bos:
        add([tokenizer.bos_id], False)
    add(tokenizer.encode_special(tpl.bos), False)
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise UserError(f"message {i}: unknown role {role!r}; use one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise UserError(f"message {i}: content must be a string")
        is_reply = role == "assistant"
        add(tokenizer.encode_special(tpl.role_prefix.format(role=role)), False)
        add(tokenizer.encode(content), is_reply)
        add(tokenizer.encode_special(tpl.end), is_reply)
        add(tokenizer.encode_special(tpl.sep), False)
    if add_generation_prompt:
        add(tokenizer.encode_special(tpl.role_prefix.format(role="assistant")), False)
    return ids, mask

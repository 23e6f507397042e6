"""The Tokenizer interface, ChatTemplate (a chat format as strings) and the sentencepiece backend: what
every tokenizer backend builds on. tokenizer/tokenizer.py (TinyMind's own tokenizer, the loader of every
backend and THE chat template) and tokenizer/hf.py (imported models' backends) both import it, so
neither imports the other's internals back.

Library module, no command; callers use tokenizer.tokenizer, which re-exports these names:
    from tokenizer.tokenizer import ChatTemplate, SentencePieceTokenizer
"""
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Optional

SPECIAL_TOKENS = {"unk": "<unk>", "pad": "<|pad|>", "eos": "<|endoftext|>",
                  "im_start": "<|im_start|>", "im_end": "<|im_end|>"}
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
    """The interface every backend provides; type_name is the "type" its state carries."""
    type_name: str
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

    type_name = "sentencepiece"

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
        return {"type": self.type_name, "model": self.model_bytes,
                "chat_template": self.chat_template.to_dict()}

    @classmethod
    def from_state(cls, state):
        return cls(state["model"], ChatTemplate.from_dict(state["chat_template"]))

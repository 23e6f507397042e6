"""Tokenizer backends and THE chat template: every stage, eval, the web demo and any server format
conversations with encode_chat() below, so training and use can never drift apart.

    from model.tokenizer import load_default_tokenizer, encode_chat
    tok = load_default_tokenizer()                       # model/tokenizer.model, shipped
    ids, mask = encode_chat(tok, [{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "hello"}])

A backend is a Tokenizer subclass (model/tokenizer_base.py, model/hf_tokenizer.py) listed in BACKENDS; it
serialises itself to a plain dict (to_state) that checkpoints carry, so one .pth file is self-contained.
"""
import io
from pathlib import Path

from .atomic import write_bytes
from .errors import UserError
from .hf_tokenizer import GGUFBPETokenizer, HFTokenizer, SentencePieceHFTokenizer
# the interface and TinyMind's own backend live in tokenizer_base (hf_tokenizer builds on them too);
# callers import them from here
from .tokenizer_base import SPECIAL_TOKENS, ChatTemplate, SentencePieceTokenizer, Tokenizer  # noqa: F401

DEFAULT_TOKENIZER_PATH = Path(__file__).resolve().parent / "tokenizer.model"
ROLES = ("system", "user", "assistant")


# the "type" a tokenizer state carries -> the backend class whose from_state rebuilds it
BACKENDS = {cls.type_name: cls for cls in (SentencePieceTokenizer, HFTokenizer, GGUFBPETokenizer,
                                           SentencePieceHFTokenizer)}


def load_tokenizer_from_state(state):
    kind = state.get("type") if isinstance(state, dict) else None
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
    write_bytes(out_path, buf.getvalue())
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

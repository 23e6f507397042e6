"""Tokenizer backends and THE chat template: every stage, eval, the web demo and any server format
conversations with encode_chat() below, so training and use can never drift apart.

    from tokenizer.tokenizer import load_default_tokenizer, encode_chat
    tok = load_default_tokenizer()                       # tokenizer/tokenizer.model, shipped
    ids, mask = encode_chat(tok, [{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "hello"}])

A backend is a Tokenizer subclass (tokenizer/base.py, tokenizer/hf.py) listed in BACKENDS; it
serialises itself to a plain dict (to_state) that checkpoints carry, so one .pth file is self-contained.
"""
import io
import re
from dataclasses import fields
from pathlib import Path

from core.atomic import write_bytes
from core.errors import UserError
from tokenizer.hf import GGUFBPETokenizer, HFTokenizer, SentencePieceHFTokenizer
# the interface and TinyMind's own backend live in tokenizer_base (hf_tokenizer builds on them too);
# callers import them from here
from tokenizer.base import SPECIAL_TOKENS, ChatTemplate, SentencePieceTokenizer, Tokenizer  # noqa: F401

DEFAULT_TOKENIZER_PATH = Path(__file__).resolve().parent / "tokenizer.model"
ROLES = ("system", "user", "assistant")


# the "type" a tokenizer state carries -> the backend class whose from_state rebuilds it
BACKENDS = {cls.type_name: cls for cls in (SentencePieceTokenizer, HFTokenizer, GGUFBPETokenizer,
                                           SentencePieceHFTokenizer)}


def load_tokenizer_from_state(state, where="checkpoint"):
    """A tokenizer state (a checkpoint's "tokenizer" entry) -> the tokenizer. A state that is not one
    gives one line naming `where` (the file) and the entry, whatever the damage."""
    def bad(what):
        return UserError(f"{where}: the 'tokenizer' entry {what}; re-create the file (train or convert again)")

    if not isinstance(state, dict):
        raise bad(f"is {type(state).__name__}, not a tokenizer's state (a dict)")
    kind = state.get("type")
    if not isinstance(kind, str) or kind not in BACKENDS:
        raise bad(f"has the unknown tokenizer type {kind!r} (known: {', '.join(BACKENDS)})")
    model = state.get("model", b"?")
    if not isinstance(model, bytes):
        raise bad(f"holds {type(model).__name__} as its model, not the tokenizer model's bytes")
    if not model:   # sentencepiece would load b"" as an uninitialised processor that logs, not raises
        raise bad("holds an empty model (0 bytes)")
    check_chat_template(state.get("chat_template"), bad)
    try:
        return BACKENDS[kind].from_state(state)
    except MemoryError:
        raise
    except KeyError as e:
        raise bad(f"({kind}) lacks the field {e.args[0]!r}") from None
    except Exception as e:      # the bytes come from a file: any failure to rebuild them is damage
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise bad(f"({kind}) cannot be rebuilt ({type(e).__name__}: {first})") from None


def check_chat_template(template, bad):
    """Raise bad(what) unless template is a ChatTemplate dict: known fields, strings (default_system may
    be None)."""
    if not isinstance(template, dict):
        raise bad(f"has a chat_template of type {type(template).__name__}, not a dict")
    known = {f.name for f in fields(ChatTemplate)}
    for key, value in template.items():
        if key not in known:
            raise bad(f"has an unknown chat_template field {key!r} (known: {', '.join(sorted(known))})")
        if not (isinstance(value, str) or (key == "default_system" and value is None)):
            raise bad(f"has chat_template.{key} of type {type(value).__name__}, not a string")


def load_default_tokenizer(path=DEFAULT_TOKENIZER_PATH):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: tokenizer not found; train one with "
                        "`python trainer/train_tokenizer.py --data_path dataset/pretrain.jsonl`")
    try:
        return SentencePieceTokenizer(path.read_bytes())
    except Exception as e:   # sentencepiece raises RuntimeError or its own parse errors on a foreign file
        raise UserError(f"{path}: not a sentencepiece tokenizer model ({type(e).__name__}); pass a "
                        "tokenizer.model written by trainer/train_tokenizer.py") from None


def train_tokenizer(texts, vocab_size=6400, out_path=DEFAULT_TOKENIZER_PATH, seed=42, max_sentences=2_000_000):
    """Train a sentencepiece BPE model on an iterable of strings and write it atomically to out_path.

    Identity normalisation, no dummy prefix and byte fallback make decode(encode(x)) == x; the chat
    markers are control symbols, so user text can never forge them. A vocab_size the corpus cannot fill
    (or that cannot hold the fixed pieces) and an error raised by texts (a bad data line) are one line.
    """
    import sentencepiece as spm
    check_vocab_size(vocab_size)
    spm.set_random_generator_seed(seed)
    raised = []

    def sentences():
        try:
            for text in texts:
                for line in text.split("\n"):       # a newline is always the byte token <0x0A>
                    if line.strip():
                        yield line[:4000]
        except BaseException as e:              # sentencepiece would wrap it in a RuntimeError
            raised.append(e)
            raise

    buf = io.BytesIO()
    try:
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
    except RuntimeError as e:
        if raised:
            raise raised[0] from None   # the reader's own error (a UserError names the file and line)
        raise vocab_size_error(e, vocab_size) or e
    write_bytes(out_path, buf.getvalue())
    return SentencePieceTokenizer(buf.getvalue())


# the pieces every TinyMind tokenizer holds whatever the corpus: 256 byte-fallback pieces and the special
# tokens; sentencepiece also wants a piece per distinct character of the corpus, so at least one more
FIXED_PIECES = 256 + len(SPECIAL_TOKENS)
MIN_VOCAB_SIZE = FIXED_PIECES + 1
MAX_VOCAB_SIZE = 2**31 - 1          # sentencepiece stores it in an int32


def check_vocab_size(vocab_size):
    """One line unless MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE (before any data is read)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise UserError(f"--vocab_size {vocab_size!r}: not an integer; 6400 is the default")
    if vocab_size < MIN_VOCAB_SIZE:
        raise UserError(f"--vocab_size {vocab_size}: too small; a tokenizer needs at least {MIN_VOCAB_SIZE} pieces "
                        f"(256 byte pieces, {len(SPECIAL_TOKENS)} special tokens, one per distinct character of "
                        "the corpus); 6400 is the default")
    if vocab_size > MAX_VOCAB_SIZE:
        raise UserError(f"--vocab_size {vocab_size}: above sentencepiece's limit of {MAX_VOCAB_SIZE}; "
                        "6400 is the default")


def vocab_size_error(err, vocab_size):
    """sentencepiece's failure for a vocab_size this corpus cannot give, as a UserError (else None)."""
    msg = str(err)
    few = re.search(r"smaller than required_chars\. \d+ vs (\d+)", msg)
    if few:
        need = int(few.group(1))
        return UserError(f"--vocab_size {vocab_size}: too small for this corpus, which needs at least {need} "
                         f"pieces ({FIXED_PIECES} fixed ones and {need - FIXED_PIECES} distinct characters); "
                         f"pass --vocab_size {need} or more")
    many = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", msg)
    if many:
        return UserError(f"--vocab_size {vocab_size}: too large for this corpus, which allows at most "
                         f"{many.group(1)} pieces; pass --vocab_size {many.group(1)} or less, or train on more text")
    if "!sentences_.empty()" in msg:
        return UserError("the corpus has no text to train on; pass --data_path with non-empty lines")
    if "vocab size too" in msg.lower() or "vocab_size" in msg:
        return UserError(f"--vocab_size {vocab_size}: sentencepiece refused it for this corpus "
                         f"({msg.strip().splitlines()[0][:160]}); lower --vocab_size")
    return None


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

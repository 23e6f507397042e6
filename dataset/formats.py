"""Data formats: read JSONL in any accepted format and normalise each record to TinyMind's canonical form.

Canonical records (what every trainer and tool sees):
    {"text": "..."}                                                   pretraining text
    {"conversations": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}   chat (MiniMind)

Accepted on input (normalised on load; scripts/convert_data.py writes the canonical form):
    MiniMind   {"conversations": [{"role": ..., "content": ...}, ...]}
    OpenAI     {"messages": [{"role": ..., "content": ...}, ...]}   (content may be a list of text parts)
    Alpaca     {"instruction": ..., "input": ..., "output": ..., "system"?: ..., "history"?: [[q, a], ...]}
    ShareGPT   {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}
    Text       {"text": ...}
Other top-level keys (e.g. "answers" in music.jsonl, "ask" and "identity" in the identity files, "id") are passed
through unchanged, so tools and evals can read them; trainers simply ignore them.

Kinds (what a reader expects):
    "chat"    a conversation that ends with an assistant reply (SFT / LoRA data)
    "prompt"  a conversation that ends with a user turn (prompts for evaluation)
    "text"    a {"text"} record (pretraining)
    "any"     any of the above

Library module, no command; used as
    from dataset.formats import iter_jsonl
    for lineno, record in iter_jsonl("dataset/sft.jsonl", kind="chat"): ...
"""
import json
import re

from core.errors import UserError
from dataset.files import BOM, open_data_file

KINDS = ("chat", "prompt", "text", "any")
ROLES = ("system", "user", "assistant")
# ShareGPT "from" values seen in the wild, mapped to canonical roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "system": "system"}
ALPACA_KEYS = ("instruction", "input", "output", "system", "history")
# JSON's spelling of a UTF-16 surrogate; decoded UTF-8 bytes never hold one (Python's codec refuses them)
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
SURROGATE_FIX = "fix or remove that \\u escape (a surrogate must come as a high+low pair)"
FIX_CHAT = 'each line should be {"conversations": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}'


def _bad(where, what, todo):
    return UserError(f"{where}: {what}; {todo}")


def _text_content(content, where, i):
    """Message content as a string; OpenAI-style lists of {"type": "text", "text": ...} parts are joined."""
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise _bad(where, f"message {i} has a non-text content part", "only text content is supported")
        content = "".join(parts)
    if not isinstance(content, str):
        raise _bad(where, f"message {i} content is {type(content).__name__}, not a string",
                   "write the message text as a JSON string")
    return content


def _check_messages(messages, where, kind):
    """Check roles, order and contents of canonical messages; return them."""
    if not messages:
        raise _bad(where, "the conversation is empty", FIX_CHAT)
    for i, m in enumerate(messages):
        if m["role"] not in ROLES:
            raise _bad(where, f"message {i} has unknown role {m['role']!r}",
                       "use one of system, user, assistant (or ShareGPT human, gpt, system)")
        if not m["content"].strip():
            raise _bad(where, f"message {i} ({m['role']}) has empty content", "remove the line or fill in the text")
        if m["role"] == "system" and i != 0:
            raise _bad(where, f"message {i} is a system message that is not first",
                       "put the system message first or drop it")
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    if not turns:
        raise _bad(where, "the conversation has only a system message", FIX_CHAT)
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            n = i + (len(messages) - len(turns))
            raise _bad(where, f"message {n} is {m['role']!r} where {want!r} was expected",
                       "turns must alternate user, assistant, user, ... starting with user")
    last = turns[-1]["role"]
    if kind == "chat" and last != "assistant":
        raise _bad(where, "the conversation does not end with an assistant reply",
                   "add the assistant's answer or drop the trailing user turn")
    if kind == "prompt" and last != "user":
        raise _bad(where, "the prompt does not end with a user turn",
                   "drop the trailing assistant reply so the model has something to answer")
    return messages


def _from_role_list(items, where, role_key, content_key, role_map=None):
    if not isinstance(items, list):
        raise _bad(where, "the conversation is not a list of messages", FIX_CHAT)
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise _bad(where, f"message {i} is {type(m).__name__}, not an object", FIX_CHAT)
        if role_key not in m or content_key not in m:
            raise _bad(where, f"message {i} lacks {role_key!r} or {content_key!r}", FIX_CHAT)
        role = m[role_key]
        if not isinstance(role, str):
            raise _bad(where, f"message {i} {role_key!r} is {type(role).__name__}, not a string",
                       "use one of system, user, assistant (or ShareGPT human, gpt, system)")
        if role_map is not None:
            if role not in role_map:
                raise _bad(where, f"message {i} has unknown ShareGPT speaker {role!r}",
                           "use from: human, gpt or system")
            role = role_map[role]
        out.append({"role": role, "content": _text_content(m[content_key], where, i)})
    return out


def _from_alpaca(obj, where):
    def field(k):
        v = obj.get(k, "")
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise _bad(where, f"Alpaca field {k!r} is {type(v).__name__}, not a string", "write it as a JSON string")
        return v

    instruction, inp, output, system = field("instruction"), field("input"), field("output"), field("system")
    if not instruction.strip():
        raise _bad(where, "Alpaca 'instruction' is empty", "fill in the instruction or drop the line")
    messages = [{"role": "system", "content": system}] if system.strip() else []
    history = obj.get("history") or []
    if not isinstance(history, list):
        raise _bad(where, f"Alpaca 'history' is {type(history).__name__}, not a list of [question, answer] pairs",
                   'write "history": [["q", "a"], ...] or drop it')
    for j, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise _bad(where, f"Alpaca history item {j} is not a [question, answer] pair of strings",
                       'write "history": [["q", "a"], ...]')
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = instruction + ("\n\n" + inp if inp.strip() else "")
    messages.append({"role": "user", "content": user})
    if output.strip() or "output" in obj:
        messages.append({"role": "assistant", "content": output})
    return messages


def _field_name(path):
    """A field's place in a record as one would write it: conversations[1].content, history[0][1]."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" if k.isidentifier() else f"[{k!r}]"
                   for k in path).lstrip(".") or "the line"


def check_encodable(obj, where):
    """UserError naming the field if any string (or key) in obj cannot be written as UTF-8.

    JSON can spell an unpaired UTF-16 surrogate ("\\ud800"); Python then holds a str that no UTF-8 file
    and no tokenizer can take. The walk is iterative: a record nested as deep as json.loads allows is fine.
    """
    stack = [((), obj)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for k, v in reversed(value.items()):     # reversed: the first bad field is the one named
                if not _encodable(k):
                    raise _bad(where, f"a key of {_field_name(path)} ({ascii(k)}) holds an unpaired UTF-16 "
                               "surrogate, which is not text", SURROGATE_FIX)
                stack.append((path + (k,), v))
        elif isinstance(value, list):
            stack.extend((path + (i,), v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, str) and not _encodable(value):
            i = next(i for i, c in enumerate(value) if not _encodable(c))
            raise _bad(where, f"{_field_name(path)} holds an unpaired UTF-16 surrogate ({ascii(value[i])[1:-1]} "
                       f"at character {i + 1}), which is not text", SURROGATE_FIX)


def _encodable(text):
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def normalize_record(obj, where, kind="any"):
    """Return the canonical form of one parsed JSON record, or raise UserError naming `where`.

    The result is {"text": str} or {"conversations": [...]} plus any unknown top-level keys of `obj`.
    """
    check_encodable(obj, where)
    return _normalize(obj, where, kind)


def _normalize(obj, where, kind):
    """normalize_record for a record whose strings are known to be encodable."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if not isinstance(obj, dict):
        raise _bad(where, f"the line is a JSON {type(obj).__name__}, not an object",
                   'each line must be one JSON object such as {"text": ...} or {"conversations": [...]}')
    if "text" in obj and not any(k in obj for k in ("conversations", "messages", "instruction")):
        if kind in ("chat", "prompt"):
            raise _bad(where, 'a {"text"} record where a conversation was expected',
                       "use this file for pretraining, or " + FIX_CHAT)
        text = obj["text"]
        if not isinstance(text, str):
            raise _bad(where, f'"text" is {type(text).__name__}, not a string', "write the text as a JSON string")
        if not text.strip():
            raise _bad(where, '"text" is empty', "remove the line or fill in the text")
        return obj  # already canonical; extra keys ride along
    if "conversations" in obj:
        conv = obj["conversations"]
        sharegpt = isinstance(conv, list) and conv and isinstance(conv[0], dict) and "from" in conv[0]
        if sharegpt:
            messages = _from_role_list(conv, where, "from", "value", SHAREGPT_ROLES)
        else:
            messages = _from_role_list(conv, where, "role", "content")
        rest = {k: v for k, v in obj.items() if k != "conversations"}
    elif "messages" in obj:
        messages = _from_role_list(obj["messages"], where, "role", "content")
        rest = {k: v for k, v in obj.items() if k != "messages"}
    elif "instruction" in obj:
        messages = _from_alpaca(obj, where)
        rest = {k: v for k, v in obj.items() if k not in ALPACA_KEYS}
    else:
        keys = ", ".join(sorted(obj)[:6]) or "none"
        want = '"text"' if kind == "text" else '"conversations"' if kind != "any" else '"conversations" or "text"'
        raise _bad(where, f"missing {want} (keys found: {keys})",
                   "use MiniMind, OpenAI messages, Alpaca, ShareGPT or {\"text\"} format")
    if kind == "text":
        raise _bad(where, "a conversation where pretraining text was expected",
                   'pretraining lines are {"text": ...}; use this file with the SFT or LoRA trainer')
    messages = _check_messages(messages, where, kind)
    return {"conversations": messages, **rest}


class JsonlReader:
    """Iterator over (lineno, canonical record) of one JSONL file; counts skipped lines in .n_bad.

    Lines are read one at a time (constant memory). Blank lines are ignored. With skip_bad=True a bad
    line is skipped and counted (its message goes to on_bad(msg) if given, and the first few are kept in
    .bad_examples); otherwise the first bad line raises UserError.
    """

    def __init__(self, path, skip_bad=False, kind="any", on_bad=None, normalize=None):
        """normalize(obj, where) -> record replaces the canonical forms of `kind` (dataset/preference.py)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.path, self.skip_bad, self.kind, self.on_bad = str(path), skip_bad, kind, on_bad
        self.normalize = normalize or (lambda obj, where: _normalize(obj, where, kind))
        self.n_good = 0
        self.n_bad = 0
        self.bad_examples = []

    def _open(self):
        return open_data_file(self.path)

    def _skip(self, err):
        self.n_bad += 1
        if len(self.bad_examples) < 20:
            self.bad_examples.append(str(err))
        if self.on_bad is not None:
            self.on_bad(str(err))

    def __iter__(self):
        with self._open() as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno == 1 and raw.startswith(BOM):
                    raw = raw[len(BOM):]
                if not raw.strip():
                    continue
                where = f"{self.path}:{lineno}"
                try:
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise UserError(f"{where}: bytes that are not UTF-8 (byte {e.start + 1} of the line); "
                                        "re-save the file as UTF-8")
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{where}: malformed JSON ({e.msg} at column {e.colno}); "
                                        "each line must be one complete JSON object")
                    except RecursionError:
                        raise UserError(f"{where}: JSON nested too deeply to read (hundreds of levels of "
                                        "[ or {); flatten the record") from None
                    if SURROGATE_ESCAPE.search(raw):     # only a \uD800-\uDFFF escape makes one
                        check_encodable(obj, where)
                    record = self.normalize(obj, where)
                except UserError as e:
                    if not self.skip_bad:
                        raise
                    self._skip(e)
                    continue
                self.n_good += 1
                yield lineno, record
        if self.n_good == 0 and self.n_bad == 0:
            raise UserError(f"{self.path}: file is empty; it needs at least one JSON line")


def iter_jsonl(path, skip_bad=False, kind="any", on_bad=None, normalize=None):
    """Yield (lineno, canonical record) for each line of a JSONL file; see JsonlReader."""
    return JsonlReader(path, skip_bad=skip_bad, kind=kind, on_bad=on_bad, normalize=normalize)


def detect_kind(path):
    """Guess a file's kind from its first good record: "text", "prompt" (ends with a user turn) or "chat"."""
    for _, rec in iter_jsonl(path, skip_bad=True, kind="any"):
        if "conversations" not in rec:
            return "text"
        return "prompt" if rec["conversations"][-1]["role"] == "user" else "chat"
    return "any"


def dumps(record):
    """The one JSON-line formatting used for every file TinyMind writes (stable bytes, UTF-8 text)."""
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "))

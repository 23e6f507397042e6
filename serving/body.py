"""THE checks of a chat-completion request, before any model is touched: the body decoded defensively (UTF-8,
JSON, nesting depth, lone UTF-16 surrogates, each field's type and range), every mistake an ApiError that
serving/api.py answers as a 400 in OpenAI's error shape naming the field (in the message, and in param for
a field's type or range). A request without temperature or top_p gets THE chat default
(inference.sampling.CHAT_SAMPLING: greedy), not OpenAI's 1; top_k and the repetition penalty, which OpenAI's
request does not have, are always that default's.

    asked = check_body(decode_body(raw), max_tokens_limit=2048)    # -> Asked(model, messages, sampling, ...)
"""
import json
from dataclasses import dataclass

from core.errors import UserError
from dataset.formats import check_encodable
from inference.sampling import CHAT_SAMPLING

ROLES = ("system", "user", "assistant")
MAX_DEPTH = 32          # far more than any chat request nests; a deeper body is refused before it is walked


class ApiError(Exception):
    def __init__(self, status, message, param=None, kind="invalid_request_error", code=None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code


@dataclass
class Asked:
    """What a request asks, checked."""
    model: str
    messages: list
    sampling: dict              # inference.sampling.CHAT_SAMPLING with the request's temperature, top_p; seed
    stop: list
    limit: int = None           # max_tokens (or max_completion_tokens) as asked; None: the server chooses
    stream: bool = False
    include_usage: bool = False


def shown(value, width=60):
    """A client's value in a message: JSON, ASCII only, cut to width characters."""
    text = json.dumps(value)
    return text if len(text) <= width else text[:width] + "..."


def decode_body(raw):
    """The request's bytes -> a JSON object whose strings are all valid text; else a 400 saying what is wrong
    (not UTF-8, not JSON, nested too deep, a lone surrogate such as JavaScript's "\\ud800" and where)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, f"the body is not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
    try:
        body = json.loads(text)
    except RecursionError:
        raise ApiError(400, f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as e:
        raise ApiError(400, f"the body is not JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object (got {type(body).__name__})")
    check_depth(body)
    try:
        check_encodable(body, "the body")         # THE check of JSON text (dataset/formats.py): lone surrogates
    except UserError as e:
        raise ApiError(400, str(e)) from None
    return body


def check_depth(body):
    """Nesting at most MAX_DEPTH, walked without recursion."""
    todo = [(body, "", 1)]
    while todo:
        value, path, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, f"the body is nested more than {MAX_DEPTH} levels deep (at {ascii(path)[1:-1][:200]})")
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for k, v in items:
            if isinstance(v, (dict, list)):
                todo.append((v, f"{path}[{k}]" if isinstance(k, int) else f"{path}.{k}" if path else k, depth + 1))


def number(body, name, default, low, high, integer=False):
    """A numeric field within [low, high] (None: the default); else a 400 naming it."""
    v = body.get(name, default)
    if v is None:
        return default
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not low <= v <= high:
        kind = "an integer" if integer else "a number"
        raise ApiError(400, f"{name} must be {kind} from {low} to {high} (got {shown(v)})", name)
    return v


def flag(value, name):
    """A true/false field (absent or null: false); else a 400 naming it."""
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false (got {shown(value)})", name)
    return bool(value)


def parse_messages(body):
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "messages must be a non-empty list of {role, content}", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ApiError(400, f"messages[{i}] must have role (one of {', '.join(ROLES)}) and content (a string)",
                           f"messages[{i}]")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] == "assistant":
        raise ApiError(400, "the last message must be the user's (or a system message)", "messages")
    return out


def parse_stop(body):
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "stop must be a string or a list of at most 4 non-empty strings", "stop")
    return stop


def check_body(body, max_tokens_limit):
    """A decoded body -> Asked; every field's type and range checked (the model's window comes later)."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "model is required (GET /v1/models lists them)", "model")
    messages = parse_messages(body)
    if body.get("n", 1) not in (1, None) or isinstance(body.get("n"), bool):
        raise ApiError(400, f"n must be 1: one choice per request (got {shown(body.get('n'))})", "n")
    sampling = {**CHAT_SAMPLING,                # top_k, repetition_penalty: no OpenAI field, the chat's
                "temperature": number(body, "temperature", CHAT_SAMPLING["temperature"], 0.0, 2.0),   # OpenAI's ranges
                "top_p": number(body, "top_p", CHAT_SAMPLING["top_p"], 0.0, 1.0),
                "seed": number(body, "seed", None, 0, 2**63 - 1, True)}
    stop = parse_stop(body)
    stream = flag(body.get("stream"), "stream")
    options = body.get("stream_options")
    if not isinstance(options if options is not None else {}, dict):
        raise ApiError(400, f"stream_options must be an object (got {shown(options)})", "stream_options")
    usage = flag((options or {}).get("include_usage"), "stream_options.include_usage")
    limit = number(body, "max_tokens", None, 1, max_tokens_limit, integer=True)
    limit = number(body, "max_completion_tokens", limit, 1, max_tokens_limit, integer=True)
    return Asked(name, messages, sampling, stop, limit, stream, usage)

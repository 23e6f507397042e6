"""The OpenAI-compatible API (FastAPI): GET /v1/models, POST /v1/chat/completions (stream as server-sent
events), errors in OpenAI's shape ({"error": {"message", "type", "param", "code"}}) with the right status.
Prompts are built by THE chat engine (chat/engine.py: the conversation's oldest whole exchanges dropped to fit
the window, the server's --persona as the system prompt unless the request has one, passages of its --docs
retrieved, their sources returned in a "sources" field that is not OpenAI's); decoding is serving.engine's batch.

    app = make_app(Engine(out_dir), api_key=None, max_body=1 << 20, max_tokens_limit=2048,
                   chat={"persona": load_persona("tinymind"), "index": open_index("dataset/knowledge/music")})
"""
import asyncio
import hmac
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chat.engine import ChatEngine
from inference.prompt import prompt_budget

ROLES = ("system", "user", "assistant")


class ApiError(Exception):
    def __init__(self, status, message, param=None, kind="invalid_request_error", code=None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code


def error_response(e):
    return JSONResponse({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code}},
                        status_code=e.status)


def number(body, name, default, low, high, integer=False):
    """A numeric field within [low, high] (None: the default); else a 400 naming it."""
    v = body.get(name, default)
    if v is None:
        return default
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not low <= v <= high:
        kind = "an integer" if integer else "a number"
        raise ApiError(400, f"{name} must be {kind} from {low} to {high} (got {json.dumps(v)})", name)
    return v


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


def plan_request(engine, body, max_tokens_limit, chat=None):
    """Everything checked before decoding -> (worker, prompt ids, max_tokens, sampling, stop, passages).
    chat: the server's chat engine settings (persona, index, docs_k)."""
    name = body.get("model")
    if not isinstance(name, str):
        raise ApiError(400, "model is required (GET /v1/models lists them)", "model")
    messages = parse_messages(body)
    if body.get("n", 1) not in (1, None) or isinstance(body.get("n"), bool):
        raise ApiError(400, f"n must be 1: one choice per request (got {json.dumps(body.get('n'))})", "n")
    sampling = {"temperature": number(body, "temperature", 1.0, 0.0, 2.0),
                "top_p": number(body, "top_p", 1.0, 0.0, 1.0), "seed": number(body, "seed", None, 0, 2**63 - 1, True)}
    stop = parse_stop(body)
    for flag in ("stream",):
        if not isinstance(body.get(flag, False), bool):
            raise ApiError(400, f"{flag} must be true or false", flag)
    if not isinstance(body.get("stream_options") or {}, dict):
        raise ApiError(400, "stream_options must be an object", "stream_options")
    limit = number(body, "max_tokens", None, 1, max_tokens_limit, integer=True)
    limit = number(body, "max_completion_tokens", limit, 1, max_tokens_limit, integer=True)
    try:
        worker = engine.worker(name)
    except LookupError:
        raise ApiError(404, f"The model '{name}' does not exist (GET /v1/models lists them)", "model",
                       code="model_not_found") from None
    except Exception as e:                                    # noqa: BLE001 - a model that fails to load
        raise ApiError(500, f"model '{name}' could not be loaded: {e}", "model", kind="server_error") from None
    ids, sources = prompt_of(worker.loaded, messages, limit, max_tokens_limit, chat)
    window = worker.loaded.model.config.max_position_embeddings
    room, max_tokens = window - len(ids), limit
    if max_tokens is not None and max_tokens > room:
        raise ApiError(400, f"max_tokens {max_tokens} does not fit: the prompt is {len(ids)} tokens and this model's "
                            f"window is {window}", "max_tokens", code="context_length_exceeded")
    return worker, ids, max_tokens or min(room, max_tokens_limit, 512), sampling, stop, sources


def prompt_of(loaded, messages, limit, max_tokens_limit, chat=None):
    """(prompt ids, retrieved passages) from THE chat engine, fitted by inference.prompt (a client's
    max_tokens is kept whole); a 400 when even the system prompt and the last message leave no room in the
    window (older turns are dropped, never the last one cut)."""
    engine = ChatEngine(loaded, **(chat or {}))
    window = loaded.model.config.max_position_embeddings
    system, last = engine.system_of(messages), messages[-1]
    minimal = len(engine.encoder.encode([last], system))
    reserve = limit or min(max(1, window - minimal), max_tokens_limit, 512)
    budget = prompt_budget(window, reserve, asked=bool(limit))
    if minimal >= window or (last["role"] == "user" and minimal > budget):
        raise ApiError(400, f"the prompt is {minimal} tokens; this model's window is {window} tokens "
                            "(prompt and reply together)", "messages", code="context_length_exceeded")
    if last["role"] != "user":            # a conversation that ends in a system message: sent as it is
        return engine.encoder.encode(messages, system), []
    turn = engine.prepare(messages[:-1], last["content"], reserve, budget=budget)
    return turn.ids, turn.passages


def make_app(engine, api_key=None, max_body=1 << 20, max_tokens_limit=2048, chat=None):
    app = FastAPI(title="TinyMind OpenAI-compatible API")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):                   # FastAPI's own 404/405 in OpenAI's shape too
        return error_response(ApiError(exc.status_code, str(exc.detail)))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key and not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {api_key}"):
            return error_response(ApiError(401, "Incorrect API key provided (Authorization: Bearer KEY)",
                                           kind="invalid_api_key", code="invalid_api_key"))
        if int(request.headers.get("content-length") or 0) > max_body:
            return error_response(ApiError(413, f"the request body is over {max_body} bytes"))
        return await call_next(request)

    @app.get("/v1/models")
    async def models():
        names = await asyncio.to_thread(engine.models)
        return {"object": "list", "data": [{"id": n, "object": "model", "created": int(c.stat().st_mtime),
                                            "owned_by": "tinymind"} for n, (c, _) in names.items()]}

    @app.get("/health")
    async def health():
        """Not OpenAI's: the loaded models and how many requests each is decoding and has waiting."""
        return {"models": {n: {"live": len(w.live), "waiting": w.waiting.qsize()}
                           for n, w in list(engine.workers.items())}}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            raw = await request.body()
            if len(raw) > max_body:
                raise ApiError(413, f"the request body is over {max_body} bytes")
            try:
                body = json.loads(raw)
            except ValueError:
                raise ApiError(400, "the body is not JSON") from None
            if not isinstance(body, dict):
                raise ApiError(400, "the body must be a JSON object")
            worker, ids, max_tokens, sampling, stop, passages = await asyncio.to_thread(
                plan_request, engine, body, max_tokens_limit, chat)
        except ApiError as e:
            return error_response(e)
        req = engine.submit(worker, ids, max_tokens, sampling, stop, asyncio.get_running_loop())
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": body["model"]}
        if passages:        # not OpenAI's: what the answer was given to read (the server's --docs)
            meta["sources"] = [{"source": p.source, "text": p.text, "score": round(p.score, 3)} for p in passages]
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(stream(req, meta, usage), media_type="text/event-stream")
        return await complete(req, meta, request)

    return app


def usage_of(end):
    return {"prompt_tokens": end["prompt_tokens"], "completion_tokens": end["completion_tokens"],
            "total_tokens": end["prompt_tokens"] + end["completion_tokens"]}


async def complete(req, meta, request):
    """The whole reply; a client that disconnects before it is done cancels it."""
    parts = []
    try:
        while True:
            try:
                item = await asyncio.wait_for(req.queue.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return error_response(ApiError(499, "the client closed the request"))
                continue
            if item["type"] == "text":
                parts.append(item["text"])
            elif item["type"] == "error":
                return error_response(ApiError(500, item["message"], kind="server_error"))
            else:
                break
    finally:
        req.cancelled = True                 # a no-op for a finished request
    return {**meta, "object": "chat.completion", "usage": usage_of(item),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)},
                         "finish_reason": item["finish"], "logprobs": None}]}


async def stream(req, meta, include_usage):
    """Server-sent events: a role chunk, content chunks, the finish chunk, usage if asked, [DONE]. A client
    that goes away cancels the request (its row leaves the batch)."""
    def chunk(delta, finish=None, **extra):
        body = {**meta, "object": "chat.completion.chunk", **extra,
                "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
    sources = meta.pop("sources", None)           # once, with the first chunk
    try:
        yield chunk({"role": "assistant", "content": ""}, **({"sources": sources} if sources else {}))
        while True:
            item = await req.queue.get()
            if item["type"] == "text":
                yield chunk({"content": item["text"]})
            elif item["type"] == "error":
                yield f"data: {json.dumps({'error': {'message': item['message'], 'type': 'server_error'}})}\n\n"
                return
            else:
                break
        yield chunk({}, item["finish"])
        if include_usage:
            yield chunk(None, usage=usage_of(item))
        yield "data: [DONE]\n\n"
    finally:
        req.cancelled = True                 # a no-op for a finished request; stops one whose client left

"""The OpenAI-compatible API (FastAPI): GET /v1/models, POST /v1/chat/completions (stream as server-sent
events), errors in OpenAI's shape ({"error": {"message", "type", "param", "code"}}) with the right status.
The body is checked by serving/body.py before any model is touched (a 400 naming the field); prompts are built
by THE chat engine (chat/engine.py: the conversation's oldest whole exchanges dropped to fit the window, the
server's --persona as the system prompt unless the request has one, passages of its --docs (else of the
knowledge base the model records: serving.engine's worker.index) retrieved, their sources returned in a
"sources" field that is not OpenAI's); decoding is serving.engine's batch, and a client
that leaves, streaming or not, takes its row out of it.

    app = make_app(Engine(out_dir), api_key=None, max_body=1 << 20, max_tokens_limit=2048,
                   chat={"persona": load_persona("tinymind"), "index": open_index("dataset/knowledge/music")})
"""
import asyncio
import hmac
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from chat.engine import ChatEngine
from inference.prompt import prompt_budget
from serving.body import ApiError, check_body, decode_body

POLL = 0.05             # seconds between two looks at whether a non-streaming client is still there


def error_response(e):
    """OpenAI's error body, as ASCII JSON (whatever a message quotes, it always encodes)."""
    body = {"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code}}
    return Response(json.dumps(body), status_code=e.status, media_type="application/json")


def too_long(window, needed, limit):
    """The 400 of a prompt that needs `needed` tokens at least: it names max_tokens when the client's
    max_tokens is what leaves no room, else the messages."""
    if limit and needed < window:
        return ApiError(400, f"max_tokens {limit} does not fit this model's window of {window} tokens: the prompt "
                             f"needs {needed} of them, which leaves room for at most {window - needed} "
                             f"(ask for max_tokens <= {window - needed})", "max_tokens", code="context_length_exceeded")
    return ApiError(400, f"the prompt is {needed} tokens; this model's window is {window} tokens (prompt and reply "
                         "together): send a shorter last message", "messages", code="context_length_exceeded")


def prompt_of(loaded, messages, limit, max_tokens_limit, chat=None):
    """(prompt ids, retrieved passages) from THE chat engine, fitted by inference.prompt (a client's
    max_tokens is kept whole); a 400 when even the system prompt and the last message leave no room in the
    window for max_tokens (older turns are dropped, never the last one cut)."""
    engine = ChatEngine(loaded, **(chat or {}))
    window = loaded.model.config.max_position_embeddings
    system, last = engine.system_of(messages), messages[-1]
    minimal = len(engine.encoder.encode([last], system))
    reserve = limit or min(max(1, window - minimal), max_tokens_limit, 512)
    budget = prompt_budget(window, reserve, asked=bool(limit))
    if minimal >= window or (last["role"] == "user" and minimal > budget):
        raise too_long(window, minimal, limit)
    if last["role"] != "user":            # a conversation that ends in a system message: sent as it is
        ids = engine.encoder.encode(messages, system)
        if len(ids) + (limit or 1) > window:
            raise too_long(window, len(ids), limit)
        return ids, []
    turn = engine.prepare(messages[:-1], last["content"], reserve, budget=budget)
    return turn.ids, turn.passages


def chat_of(chat, worker):
    """The chat engine's settings for a request to worker's model: the server's (--persona, --docs's index),
    with the knowledge base the model records as the index when the server has none."""
    if worker.index is None or (chat or {}).get("index") is not None:
        return chat
    return {**(chat or {}), "index": worker.index}


def plan(loaded, asked, max_tokens_limit, chat=None):
    """(prompt ids, max_tokens, passages) of a checked request on its model."""
    ids, passages = prompt_of(loaded, asked.messages, asked.limit, max_tokens_limit, chat)
    room = loaded.model.config.max_position_embeddings - len(ids)
    return ids, asked.limit or min(room, max_tokens_limit, 512), passages


async def read_body(request, max_body):
    """The body's bytes, reading no more than max_body (a 413 past it)."""
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise ApiError(413, f"the request body is over {max_body} bytes (the server's --max_body)")
        chunks.append(chunk)
    return b"".join(chunks)


async def open_worker(engine, name):
    """The model's decoding worker: a loaded one at once, an unknown name a 404 from out/'s listing (nothing
    is loaded for it), else its load, queued behind at most engine.max_loads others."""
    try:
        return await engine.get_worker(name)
    except LookupError:
        raise ApiError(404, f"The model {json.dumps(name[:200])} does not exist (GET /v1/models lists them)",
                       "model", code="model_not_found") from None
    except Exception as e:                                    # noqa: BLE001 - a model that fails to load
        raise ApiError(500, f"model {json.dumps(name)} could not be loaded: {e}", "model", kind="server_error") from None


class Guard:
    """What every request passes first: the API key (compared as bytes, in constant time, whatever bytes the
    header holds) and a Content-Length that must be a number within --max_body. Plain ASGI middleware:
    starlette's BaseHTTPMiddleware would hide a client's disconnect from the endpoint."""

    def __init__(self, app, api_key=None, max_body=1 << 20):
        self.app, self.key, self.max_body = app, api_key and f"Bearer {api_key}".encode("utf-8"), max_body

    def refusal(self, headers):
        if self.key and not hmac.compare_digest(headers.get(b"authorization", b""), self.key):
            return ApiError(401, "Incorrect API key provided (Authorization: Bearer KEY)", kind="invalid_api_key",
                            code="invalid_api_key")
        length = headers.get(b"content-length", b"0")
        if not length.isdigit():
            return ApiError(400, f"Content-Length must be a number of bytes (got {length[:40]!r})")
        if int(length) > self.max_body:
            return ApiError(413, f"the request body is over {self.max_body} bytes (the server's --max_body)")
        return None

    async def __call__(self, scope, receive, send):
        refused = scope["type"] == "http" and self.refusal(dict(scope["headers"]))
        if refused:
            return await error_response(refused)(scope, receive, send)
        return await self.app(scope, receive, send)


def make_app(engine, api_key=None, max_body=1 << 20, max_tokens_limit=2048, chat=None):
    app = FastAPI(title="TinyMind OpenAI-compatible API")
    app.add_middleware(Guard, api_key=api_key, max_body=max_body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):                   # FastAPI's own 404/405 in OpenAI's shape too
        return error_response(ApiError(exc.status_code, str(exc.detail)))

    @app.get("/v1/models")
    async def models():
        names = await asyncio.wrap_future(engine.lister.submit(engine.models))
        return {"object": "list", "data": [{"id": n, "object": "model", "created": created(c),
                                            "owned_by": "tinymind"} for n, (c, _) in names.items()]}

    @app.get("/health")
    async def health():
        """Not OpenAI's: the loaded models and how many requests each is decoding and has waiting."""
        return {"models": {n: {"live": len(w.live), "waiting": w.waiting.qsize()}
                           for n, w in list(engine.workers.items())}}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            asked = check_body(decode_body(await read_body(request, max_body)), max_tokens_limit)
            worker = await open_worker(engine, asked.model)
            ids, max_tokens, passages = await asyncio.to_thread(plan, worker.loaded, asked, max_tokens_limit,
                                                                chat_of(chat, worker))
        except ApiError as e:
            return error_response(e)
        except ClientDisconnect:            # it left before its body ended (a Content-Length that lied): nobody to tell
            return error_response(ApiError(400, "the client closed the connection before the body ended"))
        req = engine.submit(worker, ids, max_tokens, asked.sampling, asked.stop, asyncio.get_running_loop())
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": asked.model}
        if passages:        # not OpenAI's: what the answer was given to read (--docs, or the model's knowledge)
            meta["sources"] = [{"source": p.source, "text": p.text, "score": round(p.score, 3)} for p in passages]
        if asked.stream:
            return StreamingResponse(stream(req, meta, asked.include_usage), media_type="text/event-stream")
        return await complete(req, meta, request)

    return app


def created(path):
    try:
        return int(path.stat().st_mtime)
    except OSError:                         # removed since it was listed
        return 0


def usage_of(end):
    return {"prompt_tokens": end["prompt_tokens"], "completion_tokens": end["completion_tokens"],
            "total_tokens": end["prompt_tokens"] + end["completion_tokens"]}


async def watch(request, req):
    """Cancel req as soon as its client disconnects (its row leaves the batch at the next step)."""
    while not await request.is_disconnected():
        await asyncio.sleep(POLL)
    req.cancelled = True


async def complete(req, meta, request):
    """The whole reply; a client that disconnects before it is done cancels it within a step or two, however
    fast the tokens come."""
    parts, watcher = [], asyncio.create_task(watch(request, req))
    try:
        while True:
            item = await req.queue.get()
            if item["type"] == "text":
                parts.append(item["text"])
            elif item["type"] == "error":
                return error_response(ApiError(500, item["message"], kind="server_error"))
            elif item["finish"] == "cancelled":
                return error_response(ApiError(499, "the client closed the request"))
            else:
                break
    finally:
        watcher.cancel()
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

"""Serve out/'s models over an OpenAI-compatible API (MiniMind's serve_openai_api.py), on FastAPI + uvicorn.

    python scripts/serve_openai_api.py                          # http://127.0.0.1:8998/v1, every model of out/
    python scripts/serve_openai_api.py --host 0.0.0.0 --api_key KEY --dtype int8
    python scripts/serve_openai_api.py --persona music_tutor --docs dataset/knowledge/music   # a chatbot
    python scripts/serve_openai_api.py --no_docs                # no retrieval, not even the models' own

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8998/v1", api_key="none")
    client.chat.completions.create(model="smollm2_135m+lora_music_576", messages=[{"role": "user", "content": "hi"}])

GET /v1/models: every checkpoint in out/ and, as "base+adapter", every adapter of out/lora/ on each checkpoint
it fits. POST /v1/chat/completions: messages, model, temperature and top_p (default greedy, THE chat default
of inference/sampling.py, not OpenAI's 1), max_tokens, stop, seed, stream (server-sent events;
stream_options.include_usage). Concurrent requests to a model are decoded together
(inference/batching.py: they join and leave the batch between steps, at most --max_batch rows, the rest wait). It
binds 127.0.0.1 unless --host says otherwise; --api_key makes "Authorization: Bearer KEY" required. Prompts
come from THE chat engine (chat/engine.py), as in eval_model.py and the web demo: a conversation longer than
the window loses its oldest whole exchanges; --persona is the system prompt of a request without one; with
--docs the passages retrieved for the last message go into it and come back in the reply's "sources" field
(not OpenAI's; the client keeps it: response.model_extra["sources"]); without --docs, a model that records a
knowledge base (the music bot's dataset/knowledge/music) retrieves from it (chat.retrieval.default_docs),
unless --no_docs. --host and --port are checked (bound) before anything loads: an address that is not this
machine's, or a port in use, is one line naming the flag.
"""
import errno
import ipaddress
import socket
import warnings

import torch
import uvicorn

from core.cli import ArgumentParser, check_device, check_range, run_cli
from checkpoint import layout
from core.errors import UserError
from inference.precision import PRECISIONS
from serving.engine import Engine
from chat.persona import load_persona
from chat.retrieval import open_index


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8998, help="port to listen on (default %(default)s)")
    p.add_argument("--out_dir", default=None, help="where the models are (default $TINYMIND_OUT_DIR, else <repo>/out)")
    p.add_argument("--api_key", default="", help="require this Bearer key on every request")
    p.add_argument("--dtype", choices=PRECISIONS, default=None, help="the models' precision (default: their weights')")
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max_batch", type=int, default=16, help="rows decoded together per model (default 16)")
    p.add_argument("--max_loads", type=int, default=2, help="models loaded at once (the others wait; loaded "
                   "models keep answering) (default %(default)s)")
    p.add_argument("--max_tokens", type=int, default=2048, help="the most max_tokens a request may ask "
                   "(default %(default)s)")
    p.add_argument("--max_body", type=int, default=1 << 20, help="the largest request body in bytes (default %(default)s)")
    p.add_argument("--persona", default=None, metavar="FILE",
                   help="the system prompt of requests without one: a persona YAML file or a shipped one's name")
    p.add_argument("--docs", default=None, metavar="DIR",
                   help="retrieve from these documents for every request; the passages come back in \"sources\" "
                        "(default: each model's recorded knowledge base, if any)")
    p.add_argument("--no_docs", action="store_true",
                   help="no retrieval, not even from the knowledge base a model records")
    p.add_argument("--docs_k", type=int, default=3, help="passages retrieved per request (with --docs)")
    args = p.parse_args(argv)
    check_range("--docs_k", args.docs_k, 1, 50, integer=True)
    if args.docs and args.no_docs:
        raise UserError("--docs and --no_docs: give one (--docs DIR retrieves from DIR, --no_docs from nothing)")
    check_range("--port", args.port, 1, 65535, integer=True)
    for flag in ("max_batch", "max_loads", "max_tokens", "max_body"):
        check_range(f"--{flag}", getattr(args, flag), 1, integer=True)
    check_device(args.device)
    return args


def listen(host, port):
    """A socket listening on --host and --port, before any work: one line naming the flag when the host is
    no address (999.1.1.1) or not this machine's, or the port is taken or not allowed."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not host or all(c.isdigit() or c in ".:" for c in host):        # looks like an address, is none
            raise UserError(f"--host {host!r}: not an IP address; use 127.0.0.1, 0.0.0.0 or an address of "
                            "this machine") from None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--host {host}: no such host name here ({e}); use 127.0.0.1 or 0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"--port {port}: already in use on {host} (another server?); pick another --port") from None
        if e.errno == errno.EACCES:
            raise UserError(f"--port {port}: this user may not listen on it (ports below 1024 need root); "
                            "use one from 1024, e.g. --port 8998") from None
        raise UserError(f"--host {host}: cannot listen there ({e.strerror}); use 127.0.0.1, 0.0.0.0 or an "
                        "address of this machine") from None
    return sock


def main(argv=None):
    args = parse_args(argv)
    sock = listen(args.host, args.port)
    from serving.api import make_app            # fastapi: ~1 s of start-up, which --help does without
    # listing a model builds it on the meta device, where loading weights copies nothing; torch says so
    warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
    out = layout.out_dir(args.out_dir)
    chat = {"persona": load_persona(args.persona) if args.persona else None, "docs_k": args.docs_k,
            "index": open_index(args.docs, out) if args.docs else None}
    if chat["index"]:
        print(f"documents: {chat['index'].folder}: {chat['index'].describe()}", flush=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    engine = Engine(out, args.max_batch, args.dtype, device, args.max_loads, recorded_docs=not (args.docs or args.no_docs))
    offered = engine.models()
    if not offered:
        raise UserError(f"{out}: no model to serve; train one (python scripts/quickstart.py) or give --out_dir")
    print(f"serving {len(offered)} model(s) of {out}: {', '.join(offered)}", flush=True)
    print(f"OpenAI-compatible API at http://{args.host}:{args.port}/v1", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: --host {args.host} without --api_key: anyone who reaches this machine can use it", flush=True)
    app = make_app(engine, args.api_key or None, args.max_body, args.max_tokens, chat)
    uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    run_cli(main)

"""The serving engine: the models a server offers (out/'s checkpoints, each with the adapters that fit it,
as "base+adapter" names), loaded on first use, and one decoding thread per model that joins requests into
its inference.batching.Batch between steps and streams each request's text back to its asyncio queue. A model
that records a knowledge base (the music bot's dataset/knowledge/music: inference.load.Loaded.knowledge) gets
its index when it loads (worker.index: chat.retrieval.default_docs), unless Engine(..., recorded_docs=False).

    engine = Engine(out_dir, max_rows=16)
    worker = await engine.get_worker("smollm2_135m")              # LookupError: out/ has no such model
    req = engine.submit(worker, ids, 64, {"temperature": 0.7}, ["\\n\\n"], asyncio.get_running_loop())
    while (item := await req.queue.get())["type"] == "text": ...     # then {"type": "end", "finish": ...}
"""
import asyncio
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chat.retrieval import default_docs, open_index
from checkpoint import layout
from checkpoint.adapter import adapter_fits
from inference.batching import Batch
from inference.generate import StreamDecoder
from inference.load import file_header, load_for_inference


def list_models(out, seen=None):
    """{name: (checkpoint path, adapter path or None)} of what out/ offers: every checkpoint that loads, and
    every adapter of out/lora/ on each checkpoint it fits (model config and tokenizer: adapter_fits), read
    as the web demo reads them (inference.load.file_header); a file that would not load is left out.
    seen: a dict kept between calls, so that a file's header is read once (whatever links name it), and again
    only when the file changes (a new inode, size or time, as an atomic write makes); what is gone is forgotten."""
    cache = {} if seen is None else seen
    fresh = {}

    def header(path, adapter=False):
        try:
            st = path.stat()
        except OSError:                               # gone since the folder was read
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, adapter)      # the file, by any of its names
        if key not in fresh:
            try:
                fresh[key] = cache[key] if key in cache else file_header(path, adapter)
            except Exception:                         # noqa: BLE001 - a damaged file is not offered
                fresh[key] = None
        return fresh[key]
    adapters = [(a, h) for a in layout.find_adapters(out) if (h := header(a, adapter=True))]
    found = {}
    for c in layout.find_checkpoints(out):
        head = header(c)
        if head is None:
            continue
        found[c.stem] = (c, None)
        for a, h in adapters:
            if not adapter_fits(h, head["config"], head["tokenizer_sha256"]):
                found[f"{c.stem}+{a.stem}"] = (c, a)
    cache.clear()
    cache.update(fresh)
    return found


class Request:
    """One completion in flight: the decoding thread pushes {"type": "text", "text"} and finally
    {"type": "end", "finish": "stop" | "length" | "cancelled", "prompt_tokens", "completion_tokens"}."""

    def __init__(self, ids, max_tokens, sampling, stop, tokenizer, loop):
        self.ids, self.max_tokens, self.sampling, self.stop = ids, max_tokens, sampling, list(stop or [])
        self.tokenizer, self.loop, self.queue = tokenizer, loop, asyncio.Queue()
        self.decoder, self.held, self.row, self.cancelled, self.tokens = StreamDecoder(tokenizer), "", None, False, 0

    def push(self, item):
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def end(self, finish):
        self.push({"type": "end", "finish": finish, "prompt_tokens": len(self.ids), "completion_tokens": self.tokens})

    def add(self, token):
        """A new token -> True when a stop string ended the reply. Text that could begin a stop string is
        held back until it cannot."""
        self.tokens += 1
        self.held += self.decoder.push(token)
        found = [at for at in (self.held.find(s) for s in self.stop) if at >= 0]
        if found:                                     # the earliest stop string ends the reply
            if min(found):
                self.push({"type": "text", "text": self.held[:min(found)]})
            return True
        keep = max((k for s in self.stop for k in range(1, len(s)) if self.held.endswith(s[:k])), default=0)
        if len(self.held) > keep:
            self.push({"type": "text", "text": self.held[:len(self.held) - keep]})
            self.held = self.held[len(self.held) - keep:]
        return False


class Worker(threading.Thread):
    """The one decoding thread of a model: joins waiting requests (up to max_rows live rows), steps the
    batch, routes each row's token to its request, and drops requests whose client went away."""

    def __init__(self, loaded, max_rows, index=None):
        super().__init__(daemon=True)
        self.loaded, self.max_rows = loaded, max_rows
        self.index = index              # the knowledge base the model records, indexed (None: no retrieval)
        self.batch = Batch(loaded.model, pad_id=loaded.tokenizer.pad_id)
        self.waiting, self.live = queue.Queue(), {}

    def run(self):
        while True:
            try:
                self.turn()
            except Exception as e:                    # noqa: BLE001 - fail the requests in flight, keep serving
                self.fail_all(f"{type(e).__name__}: {e}")

    def turn(self):
        """Admit waiting requests, drop cancelled ones, decode one step."""
        new = [] if self.live else [self.waiting.get()]
        while len(self.live) + len(new) < self.max_rows and not self.waiting.empty():
            new.append(self.waiting.get_nowait())
        self.admit(new)
        for req in [r for r in self.live.values() if r.cancelled]:
            self.batch.leave(req.row)
            self.finish(req, "cancelled")
        if self.batch.rows:
            self.route(self.batch.step())

    def fail_all(self, message):
        """Something broke mid-step: every live request gets the error, and the batch starts afresh."""
        failed, self.live = self.live.values(), {}
        self.batch = Batch(self.loaded.model, pad_id=self.loaded.tokenizer.pad_id)    # before anyone is told
        for req in failed:
            req.push({"type": "error", "message": message})

    def admit(self, reqs):
        """Join waiting requests, those with the same settings in one prefill."""
        groups = {}
        for req in reqs:
            if req.cancelled:
                req.end("cancelled")
            else:
                groups.setdefault((req.max_tokens, tuple(sorted(req.sampling.items()))), []).append(req)
        for (max_tokens, _), group in groups.items():
            try:
                rows = self.batch.join([r.ids for r in group], max_new_tokens=max_tokens,
                                       stop_ids=self.loaded.tokenizer.stop_ids, **group[0].sampling)
            except Exception as e:                    # noqa: BLE001 - the requests fail, the server stays
                for r in group:
                    r.push({"type": "error", "message": str(e)})
                continue
            for req, row in zip(group, rows):
                req.row, self.live[row.id] = row, req

    def route(self, events):
        stops = self.loaded.tokenizer.stop_ids
        for row, token in events:
            req = self.live.get(row.id)
            if req is None:
                continue
            if token in stops:
                self.finish(req, "stop")
            elif req.add(token):
                self.batch.leave(row)
                self.finish(req, "stop", by_string=True)
            elif row.done:
                self.finish(req, "length")

    def finish(self, req, why, by_string=False):
        """End a request; text held back for a stop string that never came is sent first."""
        if req.held and not by_string:
            req.push({"type": "text", "text": req.held})
        self.live.pop(req.row.id, None)
        req.end(why)


class Engine:
    """The models of out/ and their decoding threads (started on a model's first request). The listing runs
    on its own thread (an unknown name is answered from it without loading anything) and loads in their own
    queue, at most max_loads at a time, so a loaded model keeps answering while others load. recorded_docs:
    a model that records a knowledge base retrieves from it (the server's --no_docs or --docs: False)."""

    def __init__(self, out, max_rows=16, dtype=None, device="cpu", max_loads=2, recorded_docs=True):
        self.out, self.max_rows, self.dtype, self.device = Path(out), max_rows, dtype, device
        self.recorded_docs = recorded_docs
        self.workers, self.lock, self.loading = {}, threading.Lock(), {}
        self.headers, self.list_lock = {}, threading.Lock()
        self.lister = ThreadPoolExecutor(1, "list-models")
        self.loader, self.max_loads = ThreadPoolExecutor(max_loads, "load-model"), max_loads

    def models(self):
        with self.list_lock:
            return list_models(self.out, self.headers)

    async def get_worker(self, name):
        """The model's worker: a loaded one at once; an unknown name (not in the listing) a LookupError,
        nothing loaded; else the model's load, one per name, in the load queue."""
        if name in self.workers:
            return self.workers[name]
        if name not in await asyncio.wrap_future(self.lister.submit(self.models)):
            raise LookupError(name)
        return await asyncio.wrap_future(self.load(name))

    def worker(self, name):
        """The model's worker, loading the model on first use (waits for it); an unknown name is a LookupError."""
        return self.workers[name] if name in self.workers else self.load(name).result()

    def load(self, name):
        """A concurrent.futures.Future of the model's worker: the load in flight for that name, or a new one."""
        with self.lock:
            future = self.loading.get(name)
            if future is None:
                future = self.loading[name] = self.loader.submit(self.start_worker, name)
                future.add_done_callback(lambda f: self.loading.pop(name, None) if self.loading.get(name) is f else 0)
            return future

    def start_worker(self, name):
        """Load the model and start its decoding thread (on the load queue)."""
        if name in self.workers:
            return self.workers[name]
        offered = self.models()
        if name not in offered:
            raise LookupError(name)
        ckpt, adapter = offered[name]
        # an adapter is offered on every base it fits (config and tokenizer), as the web demo does
        loaded = load_for_inference(ckpt=adapter or ckpt, base=ckpt if adapter else None, device=self.device,
                                    dtype=self.dtype, out=self.out, force=adapter is not None)
        docs = default_docs(None, loaded.knowledge, off=not self.recorded_docs)
        index = open_index(docs, self.out) if docs else None
        if index:
            print(f"{name}: documents {index.folder}: {index.describe()} (the knowledge base it records)", flush=True)
        w = Worker(loaded, self.max_rows, index)
        w.start()
        self.workers[name] = w
        return w

    def submit(self, worker, ids, max_tokens, sampling, stop, loop):
        req = Request(ids, max_tokens, sampling, stop, worker.loaded.tokenizer, loop)
        worker.waiting.put(req)
        return req

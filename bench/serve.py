"""Benchmark: the OpenAI-compatible server under a bounded load on localhost. The same requests (the first
--clients questions of dataset/music_test.jsonl, greedy, --max_tokens each, streamed) sent one at a time and
all at once (decoded together: inference/batching.py), then a burst of --burst concurrent requests that must all
complete. Prints the table for BENCHMARKS.md: total completion tokens/s, time to first token p50/p95, and
whether the concurrent answers equal the one-at-a-time ones.

    python scripts/bench_serve.py                               # SmolLM2, 8 clients, 64 tokens, a burst of 64
    python scripts/bench_serve.py --model full_sft_256 --out_dir out/scratch
"""
import concurrent.futures as cf
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.cli import ArgumentParser, check_range, run_cli
from evaluation.answer_tests import asked, read_conversations
from checkpoint import layout
from core.errors import UserError
from bench.common import cpu_name

ROOT = layout.repo_root()


def start(args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(ROOT / "scripts" / "serve_openai_api.py"), "--port", str(port), "--out_dir",
           str(layout.out_dir(args.out_dir)), "--max_batch", str(max(args.clients, args.max_batch)), "--device", "cpu"]
    log = open(Path(tempfile.gettempdir()) / f"bench_serve_{port}.log", "w+")      # read only if it fails
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    import httpx
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(600):
        try:
            httpx.get(f"{url}/models", timeout=1)
            return proc, url
        except httpx.TransportError:
            if proc.poll() is not None:
                log.seek(0)
                raise UserError("the server did not start: " + (log.read().strip().splitlines() or ["?"])[-1])
            time.sleep(0.1)
    proc.kill()
    raise UserError("the server did not answer within 60 s")


def ask(url, model, messages, max_tokens):
    """One streamed request -> (text, completion tokens, seconds to the first content, seconds in all)."""
    import httpx
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0, first, parts, tokens = time.perf_counter(), None, [], 0
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=600) as r:
        if r.status_code != 200:
            raise UserError(f"the server answered {r.status_code}: {r.read().decode()[:200]}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for c in chunk.get("choices", []):
                if c["delta"].get("content"):
                    first = first or time.perf_counter() - t0
                    parts.append(c["delta"]["content"])
    return "".join(parts), tokens, first or 0.0, time.perf_counter() - t0


def run(url, model, prompts, max_tokens, workers):
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda m: ask(url, model, m, max_tokens), prompts))
    return results, time.perf_counter() - t0


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2_135m", help="a name GET /v1/models lists")
    p.add_argument("--out_dir", default=None)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--burst", type=int, default=64, help="concurrent requests that must all complete")
    p.add_argument("--max_batch", type=int, default=16, help="the server's --max_batch (at least --clients)")
    args = p.parse_args(argv)
    for flag in ("clients", "max_tokens", "burst", "max_batch"):
        check_range(f"--{flag}", getattr(args, flag), 1, integer=True)
    records = read_conversations(ROOT / "dataset" / "music_test.jsonl")
    prompts = [asked(r["conversations"]) for r in records]
    if args.clients > len(prompts):
        raise UserError(f"--clients {args.clients}: the music test set has {len(prompts)} questions")
    proc, url = start(args)
    try:
        ask(url, args.model, prompts[0], 4)                                  # loads the model, warms up
        alone, t_alone = run(url, args.model, prompts[:args.clients], args.max_tokens, 1)
        together, t_together = run(url, args.model, prompts[:args.clients], args.max_tokens, args.clients)
        burst, t_burst = run(url, args.model, (prompts * (1 + args.burst // len(prompts)))[:args.burst], 16, args.burst)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs; model {args.model}; greedy, {args.max_tokens} tokens at most "
          f"per request, streamed; server --max_batch {max(args.clients, args.max_batch)}\n")
    print("| requests | sent | wall s | completion tokens | tokens/s | speed-up | TTFT p50 s | TTFT p95 s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    base = sum(r[1] for r in alone) / t_alone
    for name, res, wall in ((f"{args.clients}", alone, t_alone), (f"{args.clients}", together, t_together)):
        tps = sum(r[1] for r in res) / wall
        mode = "one at a time" if res is alone else "all at once"
        print(f"| {name} | {mode} | {wall:.2f} | {sum(r[1] for r in res)} | {tps:.1f} | {tps / base:.2f}x | "
              f"{statistics.median(r[2] for r in res):.3f} | {pct([r[2] for r in res], 0.95):.3f} |")
    same = sum(a[0] == b[0] for a, b in zip(alone, together))
    done = sum(1 for r in burst if r[1] > 0)
    print(f"\nthe same answers all at once as one at a time: {same}/{args.clients}")
    print(f"burst: {done}/{args.burst} concurrent requests (16 tokens each) completed in {t_burst:.1f} s, "
          f"{sum(r[1] for r in burst)} tokens, TTFT p50 {statistics.median(r[2] for r in burst):.2f} s, "
          f"p95 {pct([r[2] for r in burst], 0.95):.2f} s")
    return 0


if __name__ == "__main__":
    run_cli(main)

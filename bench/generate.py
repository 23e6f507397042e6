"""Benchmark: decode and prefill tokens/s of TinyMind's sampling loop at each precision (float32, bfloat16,
int8: inference/precision.py) against transformers' generate in float32 (what a user gets by default).

    python scripts/bench_generate.py                                  # small preset and SmolLM2, all precisions
    python scripts/bench_generate.py --models small --dtypes float32  # the float32 race alone
    python scripts/bench_generate.py --models smollm2 --llama_cpp     # + llama.cpp on the GGUF SmolLM2 came from
    python scripts/bench_generate.py --models tiny --threads 1 --new_tokens 128

--models: presets (tiny, small, base, moe: random weights, seed 0) or models as eval_bench's --model takes
them (smollm2, a checkpoint .pth). Every row of a model runs the same weights (TinyMind's state dict loaded
into LlamaForCausalLM for transformers; each precision applied at load time to the float32 weights), the
same random prompt, greedy, no stop token, interleaved, best of --repeats. "same greedy" compares the first
--check_tokens tokens of each row with TinyMind float32's on --check_prompts prompts (the music test set's
questions in the chat template for a real model; random prompts for a preset, whose random weights have
near ties that any rounding flips), and "same tokens" how many first tokens agree on average.
--llama_cpp adds llama.cpp (llama-cpp-python, if installed) on the GGUF files TinyMind writes of the same
weights (interop/gguf_export.py; --gguf_types, default f32,f16,q8_0,its: float32's match, half precision
(f16, not bfloat16's format but its size), int8's nearest (8-bit blocks of 32), and for a model imported
from a GGUF file, that file as it is, its own quantisation).
"""
import copy
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch


from core.cli import ArgumentParser, run_cli
from evaluation.answer_tests import asked, read_conversations
from checkpoint import layout
from checkpoint.pth import save_checkpoint
from model.config import PRESETS, get_preset
from core.errors import UserError
from interop.gguf_export import TYPES as GGUF_TYPES, export_gguf
from inference.generate import generate
from inference.prompt import build_prompt
from inference.load import load_model_spec
from model.model import TinyMindForCausalLM
from inference.precision import PRECISIONS, apply_precision
from tokenizer.tokenizer import load_default_tokenizer
from bench.common import cpu_name, to_hf


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def load(spec):
    """(name, float32 model, tokenizer or None, GGUF source or None) for a preset or a model spec."""
    if spec in PRESETS:
        torch.manual_seed(0)
        return spec, TinyMindForCausalLM(get_preset(spec)).eval(), None, None
    loaded = load_model_spec(spec, layout.out_dir(), dtype="float32")
    source = str(loaded.info.get("source") or loaded.info["checkpoint"])       # an imported model's origin
    return loaded.label, loaded.model, loaded.tokenizer, source if source.endswith(".gguf") else None


def check_prompts(model, tokenizer, n):
    if tokenizer is None:
        g = torch.Generator().manual_seed(1)
        return [torch.randint(5, model.config.vocab_size, (24,), generator=g).tolist() for _ in range(n)]
    records = read_conversations(layout.repo_root() / "dataset" / "music_test.jsonl")[:n]
    return [build_prompt(tokenizer, asked(r["conversations"])) for r in records]


class TinyMindRow:
    def __init__(self, model, dtype):
        self.name = f"TinyMind {dtype}"
        self.model = model if dtype == "float32" else apply_precision(copy.deepcopy(model), dtype, "cpu")

    def prefill(self, ids):
        with torch.inference_mode():
            self.model(torch.tensor([ids]), last_only=True)

    def decode(self, ids, n):
        return generate(self.model, [ids], max_new_tokens=n)[0]


class TransformersRow:
    def __init__(self, model):
        self.name, self.model = "transformers float32", to_hf(model)

    def prefill(self, ids):
        with torch.inference_mode():
            self.model(torch.tensor([ids]), logits_to_keep=1)

    def decode(self, ids, n):
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                      do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[0, len(ids):].tolist()


class LlamaCppRow:
    def __init__(self, gguf, threads, name=None):
        from llama_cpp import Llama         # optional dependency (llama-cpp-python), only for --llama_cpp
        self.llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=threads, n_batch=512, verbose=False)
        self.name = name or f"llama.cpp {Path(gguf).stem.rsplit('.', 1)[-1]} (its GGUF)"

    def prefill(self, ids):
        self.llm.reset()
        self.llm.eval(ids)

    def decode(self, ids, n):
        self.llm.reset()
        out = []
        for t in self.llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(int(t))
            if len(out) == n:
                break
        return out


def written_gguf_rows(model, tokenizer, types, work):
    """llama.cpp rows on GGUF files of the model's own weights, written by TinyMind (interop/gguf_export.py)."""
    ckpt = Path(work) / "bench_model.pth"
    save_checkpoint(ckpt, model.state_dict(), model.config, tokenizer or load_default_tokenizer(), {"stage": "bench"})
    rows = [LlamaCppRow(export_gguf(ckpt, Path(work) / f"bench_{t}.gguf", t), torch.get_num_threads(),
                        f"llama.cpp {t} (TinyMind's GGUF)") for t in types]
    ckpt.unlink()
    return rows


def common_prefix(a, b):
    """How many first tokens two outputs share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def bench_model(spec, args):
    name, model, tokenizer, gguf = load(spec)
    rows = [TinyMindRow(model, d) for d in args.dtypes] + [TransformersRow(model)]
    if args.llama_cpp:
        rows += written_gguf_rows(model, tokenizer, [t for t in args.gguf_types if t != "its"], args.work)
        rows += [LlamaCppRow(gguf, torch.get_num_threads())] if gguf and "its" in args.gguf_types else []
    prompt = torch.randint(5, model.config.vocab_size, (args.prompt_len,),
                           generator=torch.Generator().manual_seed(0)).tolist()
    for r in rows:
        r.decode(prompt, 8)                                                    # warm up
    pre, dec = {r.name: [] for r in rows}, {r.name: [] for r in rows}
    for _ in range(args.repeats):                                              # interleaved rounds
        for r in rows:
            pre[r.name].append(best_of(lambda: r.prefill(prompt), 1))
            dec[r.name].append(best_of(lambda: r.decode(prompt, args.new_tokens), 1))
    checks = check_prompts(model, tokenizer, args.check_prompts)
    ref = [rows[0].decode(p, args.check_tokens) for p in checks] if args.dtypes[0] == "float32" else None
    table = []
    for r in rows:
        t_pre, t_all = min(pre[r.name]), min(dec[r.name])
        # the decode rate leaves out the prefill, which each call does once
        agree = [common_prefix(r.decode(p, args.check_tokens), want) for p, want in zip(checks, ref)] if ref else []
        table.append((r.name, args.prompt_len / t_pre, args.new_tokens / max(t_all - t_pre, 1e-9), agree))
    return name, model.num_parameters(), table


def main():
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated presets or models (default small,smollm2)")
    ap.add_argument("--preset", default=None, help="one preset (the same as --models PRESET)")
    ap.add_argument("--dtypes", default="float32,bfloat16,int8", help="TinyMind's precisions, float32 first")
    ap.add_argument("--prompt_len", type=int, default=64, help="prompt tokens")
    ap.add_argument("--new_tokens", type=int, default=256, help="tokens to decode")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds; the best of each row is reported")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--check_prompts", type=int, default=8, help="prompts of the same-greedy check")
    ap.add_argument("--check_tokens", type=int, default=32, help="tokens compared per prompt")
    ap.add_argument("--llama_cpp", action="store_true", help="add llama.cpp on GGUF files of the same weights")
    ap.add_argument("--gguf_types", default="f32,f16,q8_0,its", help="--llama_cpp: the GGUF types TinyMind "
                    "writes, and its: the file an imported model came from")
    args = ap.parse_args()
    args.gguf_types = [t for t in args.gguf_types.split(",") if t]
    if set(args.gguf_types) - set(GGUF_TYPES) - {"its"}:
        raise UserError(f"--gguf_types {','.join(args.gguf_types)}: use some of {', '.join(GGUF_TYPES)}, its")
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    if not args.dtypes or set(args.dtypes) - set(PRECISIONS):
        raise UserError(f"--dtypes {','.join(args.dtypes)}: use some of {', '.join(PRECISIONS)}")
    models = (args.models or args.preset or "small,smollm2").split(",")
    if args.llama_cpp and importlib.util.find_spec("llama_cpp") is None:
        raise UserError("--llama_cpp needs llama-cpp-python: pip install llama-cpp-python "
                        "(it compiles llama.cpp, several minutes)")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:                                # the GGUF files, removed after
        args.work = work
        results = [bench_model(m, args) for m in models]
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()} kernels), batch 1, "
          f"prompt {args.prompt_len} random tokens, {args.new_tokens} new tokens, greedy, best of "
          f"{args.repeats} interleaved rounds")
    print()
    print(f"| {'model':<20} | {'implementation':<32} | {'prefill tok/s':>13} | {'decode tok/s':>12} | "
          f"{'vs transformers':>15} | {'same greedy':>11} | {'same tokens':>11} |")
    print(f"|{'-' * 22}|{'-' * 34}|{'-' * 14}:|{'-' * 13}:|{'-' * 16}:|{'-' * 12}:|{'-' * 12}:|")
    for name, n_params, table in results:
        ref = next(dec for impl, _, dec, _ in table if impl.startswith("transformers"))
        label = f"{name} ({n_params / 1e6:.0f}M)"
        for impl, pre, dec, agree in table:
            same = f"{sum(a == args.check_tokens for a in agree)}/{len(agree)}" if agree else "-"
            mean = f"{sum(agree) / len(agree):.1f}" if agree else "-"
            print(f"| {label:<20} | {impl:<32} | {pre:>13,.0f} | {dec:>12,.1f} | {dec / ref:>14.2f}x | "
                  f"{same:>11} | {mean:>11} |")
            label = ""
    print(f"\nsame greedy: prompts whose first {args.check_tokens} greedy tokens equal TinyMind float32's; same "
          "tokens: how many first tokens are equal, on average")


if __name__ == "__main__":
    run_cli(main)

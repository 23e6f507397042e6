"""Benchmark: decode and prefill tokens/s of TinyMind's sampling loop vs transformers' generate.

    python scripts/bench_generate.py                     # small preset (~26M), batch 1, CPU
    python scripts/bench_generate.py --preset base --new_tokens 128 --prompt_len 256

Both run the same weights (TinyMind's state dict loaded into LlamaForCausalLM) in the same process,
greedy, no stop token, so both produce the same number of tokens. Prints a table.
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli import ArgumentParser  # noqa: E402
from model.config import get_preset  # noqa: E402
from model.generate import generate  # noqa: E402
from model.model import TinyMindForCausalLM  # noqa: E402
from bench_common import cpu_name  # noqa: E402


def to_hf(model):
    from transformers import LlamaConfig, LlamaForCausalLM
    from model.convert import hf_config_dict
    hf = LlamaForCausalLM(LlamaConfig(**hf_config_dict(model.config)))
    hf.load_state_dict(model.state_dict(), strict=True)
    return hf.eval()


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", help="model preset (tiny/small/base/moe)")
    ap.add_argument("--prompt_len", type=int, default=64, help="prompt tokens")
    ap.add_argument("--new_tokens", type=int, default=256, help="tokens to decode")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TinyMindForCausalLM(get_preset(args.preset)).eval()
    hf = to_hf(model)
    prompt = torch.randint(5, model.config.vocab_size, (1, args.prompt_len))
    ids = prompt[0].tolist()

    def ours_prefill():
        with torch.inference_mode():
            model(prompt, last_only=True)

    def hf_prefill():
        with torch.inference_mode():
            hf(prompt, logits_to_keep=1)

    def ours_decode():
        generate(model, [ids], max_new_tokens=args.new_tokens)

    def hf_decode():
        with torch.inference_mode():
            hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                        min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)

    ours_decode(), hf_decode()                                    # warm up
    rows = []
    for name, pre, dec in [("TinyMind generate()", ours_prefill, ours_decode),
                           ("transformers generate()", hf_prefill, hf_decode)]:
        t_pre = best_of(pre, args.repeats)
        t_all = best_of(dec, args.repeats)
        # decode rate excludes the prefill, which both do once per call
        rows.append((name, args.prompt_len / t_pre, args.new_tokens / max(t_all - t_pre, 1e-9)))
    same = generate(model, [ids], max_new_tokens=32)[0] == hf.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32, min_new_tokens=32, do_sample=False,
        eos_token_id=None, pad_token_id=0)[0, args.prompt_len:].tolist()

    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"preset {args.preset} ({model.num_parameters() / 1e6:.1f}M params), batch 1, "
          f"prompt {args.prompt_len}, {args.new_tokens} new tokens, greedy, best of {args.repeats}")
    print(f"greedy outputs identical for 32 tokens: {same}")
    print()
    print(f"| {'implementation':<24} | {'prefill tok/s':>13} | {'decode tok/s':>12} | {'decode speed-up':>15} |")
    print(f"|{'-' * 26}|{'-' * 15}|{'-' * 14}|{'-' * 17}|")
    ref = rows[1][2]
    for name, pre, dec in rows:
        print(f"| {name:<24} | {pre:>13,.0f} | {dec:>12,.1f} | {dec / ref:>14.2f}x |")


if __name__ == "__main__":
    main()

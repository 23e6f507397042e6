"""Benchmark: IFD scoring samples/s, TinyMind's batched scorer (selection/ifd.py) against the reference's way
(Cherry_LLM's data_analysis.py: transformers, one sample at a time, two forward passes per sample with the
full logits), on the same model, weights, samples and token ids, in one run.

    python scripts/bench_select.py                       # SmolLM2, the first 64 samples of dataset/sft.jsonl
    python scripts/bench_select.py --ckpt out/full_sft_512.pth --samples 200 --dtypes float32

The reference loop, re-implemented as Cherry's code runs it: for each sample, LlamaForCausalLM(ids,
labels=labels) on question + answer (labels -100 before the answer) and on the answer-alone prefix + its
answer (for --prompt alpaca cut as Cherry cuts it, maybe shorter); loss = outputs.loss (the mean
cross-entropy of the answer tokens); ifd = the ratio. (tests/test_ifd_parity.py holds the scores to
Cherry's own tokenization and slicing; here both sides take the same token ids.) "max rel diff" is the
largest relative difference of a sample's ifd from the reference's.
"""
import sys
import time

import torch


from core.cli import ArgumentParser, run_cli
from checkpoint import layout
from inference.load import load_model_spec
from inference.precision import PRECISIONS, apply_precision
from selection.ifd import PROMPTS, Pair, make_batches, score_batch
from selection.samples import read_samples
from bench.common import cpu_name, to_hf


def reference(hf, pairs):
    """Cherry's loop: one sample at a time, two forwards, HF's own loss over the full logits."""
    out = []
    with torch.no_grad():
        for p in pairs:
            losses = []
            for context, answer in ((p.question, p.answer), (p.alone, p.alone_answer)):
                ids = torch.tensor([context + answer])
                labels = ids.clone()
                labels[0, :len(context)] = -100
                losses.append(hf(ids, labels=labels).loss.item())
            out.append(losses[0] / losses[1])
    return out


def main():
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="smollm2", help="the scorer (as select_data.py score --ckpt)")
    ap.add_argument("--data_path", default=str(layout.repo_root() / "dataset" / "sft.jsonl"))
    ap.add_argument("--samples", type=int, default=64, help="the first N samples")
    ap.add_argument("--prompt", choices=PROMPTS, default="chatml")
    ap.add_argument("--max_length", type=int, default=512)
    ap.add_argument("--batch_tokens", type=int, default=1024)
    ap.add_argument("--dtypes", default="float32,bfloat16", help="TinyMind's precisions, comma-separated")
    args = ap.parse_args()
    loaded = load_model_spec(args.ckpt, layout.out_dir(), dtype="float32")
    samples = read_samples(layout.resolve_input(args.data_path))[:args.samples]
    pairs = [Pair(s, loaded.tokenizer, args.prompt, args.max_length) for s in samples]
    pairs = [p for p in pairs if p.scored]
    hf = to_hf(loaded.model)
    reference(hf, pairs[:2])                                             # warm up
    t0 = time.perf_counter()
    ref = reference(hf, pairs)
    rows = [("reference: transformers, 1 sample, 2 forwards", "float32", time.perf_counter() - t0, 0.0)]
    for dtype in args.dtypes.split(","):
        if dtype not in PRECISIONS:
            raise SystemExit(f"--dtypes {dtype}: use some of {', '.join(PRECISIONS)}")
        model = loaded.model if dtype == "float32" else apply_precision(
            load_model_spec(args.ckpt, layout.out_dir(), dtype="float32").model, dtype, "cpu")
        batches = make_batches(pairs, args.batch_tokens)
        score_batch(model, batches[0][:2], loaded.tokenizer.pad_id)      # warm up
        t0 = time.perf_counter()
        got = {r["line"]: r["ifd"] for b in batches for r in score_batch(model, b, loaded.tokenizer.pad_id)}
        diff = max(abs(got[p.line] - want) / abs(want) for p, want in zip(pairs, ref))
        rows.append((f"TinyMind batched ({len(batches)} batches)", dtype, time.perf_counter() - t0, diff))
    tokens = sum(p.tokens for p in pairs)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; scorer "
          f"{loaded.label} ({loaded.info['parameters'] / 1e6:.0f}M), {len(pairs)} samples of {args.data_path} "
          f"({tokens:,} tokens over both passes), --prompt {args.prompt}, --max_length {args.max_length}")
    print()
    print(f"| {'scorer':<46} | {'dtype':<8} | {'seconds':>8} | {'samples/s':>9} | {'speed-up':>8} | "
          f"{'max rel diff':>12} |")
    print(f"|{'-' * 48}|{'-' * 10}|{'-' * 9}:|{'-' * 10}:|{'-' * 9}:|{'-' * 13}:|")
    for name, dtype, secs, diff in rows:
        print(f"| {name:<46} | {dtype:<8} | {secs:>8.2f} | {len(pairs) / secs:>9.2f} | "
              f"{rows[0][2] / secs:>7.2f}x | {diff:>12.2e} |")


if __name__ == "__main__":
    run_cli(main)

"""Train the sentencepiece BPE tokenizer (byte fallback, ChatML control tokens) on JSONL text.

    python trainer/train_tokenizer.py --data_path dataset/pretrain.jsonl --vocab_size 6400

Reads {"text": ...} lines and conversation lines alike (every message's content is used) and writes
tokenizer/tokenizer.model (or --out_dir/tokenizer.model) atomically.
"""
from pathlib import Path

from core.cli import ArgumentParser, check_range, run_cli
from core.atomic import check_writable
from core.errors import UserError
from checkpoint.layout import resolve_input
from dataset.formats import iter_jsonl
from tokenizer.tokenizer import DEFAULT_TOKENIZER_PATH, MIN_VOCAB_SIZE, train_tokenizer


def iter_texts(path, max_chars):
    total = 0
    for _, record in iter_jsonl(path, kind="any"):
        if "text" in record:
            text = record["text"]
        else:
            text = "\n".join(m["content"] for m in record["conversations"])
        total += len(text)
        yield text
        if max_chars and total >= max_chars:
            return


def main(argv=None):
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_path", default="../dataset/pretrain.jsonl", help="JSONL corpus")
    ap.add_argument("--vocab_size", type=int, default=6400,
                    help=f"pieces in the vocabulary (at least {MIN_VOCAB_SIZE}; at most what the corpus gives)")
    ap.add_argument("--out_dir", default=str(DEFAULT_TOKENIZER_PATH.parent),
                    help="folder for tokenizer.model")
    ap.add_argument("--max_chars", type=int, default=50_000_000,
                    help="stop reading after this many characters (0 = read it all)")
    ap.add_argument("--seed", type=int, default=42, help="sentencepiece's random seed")
    args = ap.parse_args(argv)
    check_range("--max_chars", args.max_chars, 0, integer=True)
    check_range("--seed", args.seed, 0, 2**31 - 1, integer=True)
    out = Path(args.out_dir) / "tokenizer.model"
    check_writable(out)
    path = resolve_input(args.data_path)
    if not path.is_file():
        raise UserError(f"{args.data_path}: no such file; pass --data_path with a JSONL corpus")
    tok = train_tokenizer(iter_texts(path, args.max_chars), args.vocab_size, out, seed=args.seed)
    print(f"wrote {out} ({tok.vocab_size} pieces)")


if __name__ == "__main__":
    run_cli(main)

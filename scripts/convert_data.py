"""Convert chat or text data in any accepted format to TinyMind's canonical MiniMind JSONL.

    python scripts/convert_data.py alpaca.json -o dataset/my_sft.jsonl
    python scripts/convert_data.py sharegpt.jsonl openai.jsonl -o dataset/my_sft.jsonl --kind chat --skip_bad

Input: JSONL (one record per line) or a JSON file holding one list of records (as Alpaca and ShareGPT
dumps usually are). Accepted record formats: MiniMind conversations, OpenAI {"messages"}, Alpaca
{"instruction", "input", "output"}, ShareGPT {"conversations": [{"from", "value"}]}, {"text"}
(see dataset/formats.py). Output: {"conversations": [{"role", "content"}, ...]} or {"text"} lines;
extra top-level keys are kept. The output is written atomically, and is never one of the inputs (refused
before any reading: the same file, or a link to it).
"""
import sys


from dataset.formats import KINDS, dumps, iter_jsonl, normalize_record
from core.atomic import atomic_open
from core.errors import UserError
from dataset.files import is_json_array, read_json_array
from core.ownership import check_outputs
from core.cli import ArgumentParser, run_cli


def iter_json_array(path, kind, skip_bad, on_bad):
    """Records of a JSON list file (loaded whole: such dumps are small); `where` names the item index."""
    for i, obj in enumerate(read_json_array(path)):
        try:
            yield i, normalize_record(obj, f"{path}[{i}]", kind)
        except UserError as e:
            if not skip_bad:
                raise
            on_bad(str(e))


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="JSONL or JSON-list files in any accepted format")
    p.add_argument("-o", "--output", required=True, help="canonical JSONL to write")
    p.add_argument("--kind", choices=KINDS, default="any", help="chat: every record must end with an assistant reply")
    p.add_argument("--skip_bad", action="store_true", help="skip bad records (counted) instead of stopping")
    args = p.parse_args(argv)
    check_outputs([("-o", args.output)], args.inputs)
    bad = []
    n = 0
    with atomic_open(args.output) as f:
        for path in args.inputs:
            records = (iter_json_array(path, args.kind, args.skip_bad, bad.append) if is_json_array(path)
                       else iter_jsonl(path, skip_bad=args.skip_bad, kind=args.kind, on_bad=bad.append))
            for _, rec in records:
                f.write(dumps(rec) + "\n")
                n += 1
    for msg in bad[:10]:
        print(f"skipped: {msg}", file=sys.stderr)
    print(f"wrote {args.output} ({n:,} records" + (f", {len(bad):,} bad records skipped)" if bad else ")"))


if __name__ == "__main__":
    run_cli(main)

"""The samples a selection reads and writes, each kept in its file's own shape: a JSONL file (any format
dataset/formats.py reads) line by line, or Alpaca's own file (one JSON array of {"instruction", "input",
"output"} objects) item by item. A sample's "line" is its line number in a JSONL file, its 1-based item
number in an array, so scores and selections point back into the file.

    from selection.samples import read_samples, write_samples
    samples = read_samples("alpaca_data.json")            # [Sample(line, raw, record)]
    write_samples("top.json", samples[:10], like="alpaca_data.json")
"""
import json
from dataclasses import dataclass
from pathlib import Path

from dataset.formats import dumps, normalize_record
from core.atomic import write_text
from core.errors import UserError
from dataset.files import is_json_array, read_json_array


@dataclass
class Sample:
    line: int           # the line (JSONL) or 1-based item (JSON array) it came from
    raw: object         # the object as the file has it (written back unchanged)
    record: dict        # its canonical form: {"conversations": [...]} ending with an assistant reply


def read_samples(path):
    """Every sample of a JSONL file or a JSON array file; a bad one is one line naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if is_json_array(path):
        numbered = [(i + 1, obj, f"{path}: item {i + 1}") for i, obj in enumerate(read_json_array(path))]
    else:
        numbered = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    numbered.append((n, json.loads(line), f"{path}:{n}"))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n}: not valid JSON ({e.msg}); fix or remove the line") from None
    samples = [Sample(n, obj, normalize_record(obj, where, kind="chat")) for n, obj, where in numbered]
    if not samples:
        raise UserError(f"{path}: no samples in the file")
    return samples


def write_samples(path, samples, like):
    """Write samples in the shape of the file `like` (a JSON array, or JSONL), atomically."""
    if is_json_array(like):
        text = json.dumps([s.raw for s in samples], ensure_ascii=False, indent=2) + "\n"
    else:
        text = "".join(dumps(s.raw) + "\n" for s in samples)
    return write_text(path, text)

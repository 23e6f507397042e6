"""The files data comes in: opening one for reading (a regular file only: a FIFO or a device would block),
and the JSON array files of Alpaca and ShareGPT dumps (alpaca_data.json), read the way dataset/formats.py
reads JSONL (a UTF-8 byte-order mark skipped, every problem one line).

Library module, no command:
    from dataset.files import is_json_array, open_data_file, read_json_array
    items = read_json_array("alpaca_data.json") if is_json_array("alpaca_data.json") else None
"""
import json
import stat
from pathlib import Path

from core.errors import UserError

BOM = b"\xef\xbb\xbf"          # a UTF-8 byte-order mark, as some editors write at the start of a file


def open_data_file(path):
    """Open a data file for reading (binary), or one line saying why not: missing, a folder, not a regular
    file (a FIFO or a device would block until something writes to it, or never end), not readable."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; check the path (relative paths start at the current directory)") \
            from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror}); check the path and its permissions") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{path}: is a directory, not a file; pass a .jsonl file inside it")
    if not stat.S_ISREG(mode):
        what = ("a FIFO (named pipe): reading it would wait for a writer" if stat.S_ISFIFO(mode) else
                "a device or socket: reading it may never end")
        raise UserError(f"{path}: is {what}; write the data to a regular .jsonl file and pass that")
    try:
        return open(p, "rb")
    except OSError as e:
        raise UserError(f"{path}: cannot be opened ({e.strerror}); check its permissions") from None


def is_json_array(path):
    """Whether a data file is one JSON array (Alpaca's alpaca_data.json, ShareGPT dumps) rather than JSONL:
    its first character after a byte-order mark and blanks is "[". A file that cannot be read: False (the
    reader then says why)."""
    try:
        with open_data_file(path) as f:
            head = f.read(4096)
    except UserError:
        return False
    return head.removeprefix(BOM).lstrip(b" \t\r\n").startswith(b"[")


def read_json_array(path):
    """The items of a JSON array file (loaded whole: such dumps are small), read like JSONL is: a UTF-8
    byte-order mark is skipped; bad bytes, bad JSON or a top level that is not an array are one line."""
    with open_data_file(path) as f:
        raw = f.read().removeprefix(BOM)
    try:
        items = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: bytes that are not UTF-8 (byte {e.start + 1}); re-save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno}); fix the file or "
                        "export it as JSONL") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply to read; flatten the records") from None
    if not isinstance(items, list):
        raise UserError(f"{path}: the JSON is {type(items).__name__}, not an array of records; give one JSON "
                        "array, or one JSON object per line")
    return items

"""Tests for dataset/formats.py and dataset/files.py: every accepted format normalises, every bad input gets its
one-line message; a JSON array file is read as a JSONL file is (a byte-order mark skipped); a FIFO or a device
is refused without being opened.

    python -m pytest tests/test_data_formats.py -q
"""
import json
import os

import pytest

from dataset.files import is_json_array, read_json_array
from dataset.formats import iter_jsonl, normalize_record
from core.errors import UserError

CANON = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write(tmp_path, lines, name="x.jsonl"):
    p = tmp_path / name
    p.write_bytes(b"".join((l if isinstance(l, bytes) else (l if isinstance(l, str) else json.dumps(l)).encode()) + b"\n"
                           for l in lines))
    return p


@pytest.mark.parametrize("obj", [
    CANON,
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, {"role": "assistant", "content": "hello"}]},
    {"instruction": "hi", "output": "hello"},
    {"instruction": "hi", "input": "", "output": "hello"},
    {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
])
def test_chat_formats_normalise_to_minimind(obj):
    assert normalize_record(obj, "f:1", kind="chat") == CANON


def test_alpaca_input_system_and_history():
    rec = normalize_record({"instruction": "Translate", "input": "你好", "output": "Hello", "system": "Be brief.",
                            "history": [["q0", "a0"]]}, "f:1", kind="chat")
    assert [m["role"] for m in rec["conversations"]] == ["system", "user", "assistant", "user", "assistant"]
    assert rec["conversations"][3]["content"] == "Translate\n\n你好"


def test_sharegpt_system_and_extra_keys_pass_through():
    obj = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"},
                             {"from": "gpt", "value": "a"}], "answers": ["a", "A"], "id": 7}
    rec = normalize_record(obj, "f:1", kind="chat")
    assert rec["conversations"][0] == {"role": "system", "content": "S"}
    assert rec["answers"] == ["a", "A"] and rec["id"] == 7


def test_text_and_prompt_kinds():
    assert normalize_record({"text": "abc"}, "f:1", kind="text") == {"text": "abc"}
    prompt = {"conversations": [{"role": "user", "content": "who are you"}], "expect": {"name": "X"}}
    assert normalize_record(prompt, "f:1", kind="prompt")["expect"] == {"name": "X"}
    assert normalize_record(prompt, "f:1", kind="any")["conversations"][0]["content"] == "who are you"


@pytest.mark.parametrize("obj,kind,fragment", [
    ([1, 2], "any", "not an object"),
    ({"foo": 1}, "chat", 'missing "conversations"'),
    ({"foo": 1}, "text", 'missing "text"'),
    ({"conversations": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "chat", "unknown role 'bot'"),
    ({"conversations": [{"from": "robot", "value": "x"}]}, "chat", "unknown ShareGPT speaker"),
    ({"conversations": [{"role": "user", "content": "x"}]}, "chat", "does not end with an assistant"),
    ({"conversations": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}, "chat", "empty content"),
    ({"conversations": [{"role": "assistant", "content": "x"}]}, "chat", "'user' was expected"),
    ({"conversations": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}, "any", "'assistant' was expected"),
    ({"conversations": []}, "chat", "empty"),
    ({"conversations": "hello"}, "chat", "not a list"),
    ({"text": ""}, "text", '"text" is empty'),
    ({"text": 5}, "text", "not a string"),
    ({"text": "abc"}, "chat", "where a conversation was expected"),
    (CANON, "text", "where pretraining text was expected"),
    (CANON, "prompt", "does not end with a user turn"),
    ({"instruction": "", "output": "x"}, "chat", "'instruction' is empty"),
])
def test_bad_records_name_where_and_what(obj, kind, fragment):
    with pytest.raises(UserError) as e:
        normalize_record(obj, "dataset/x.jsonl:17", kind=kind)
    msg = str(e.value)
    assert msg.startswith("dataset/x.jsonl:17: ") and fragment in msg and "\n" not in msg and "; " in msg


def test_iter_jsonl_reads_lines_with_numbers_and_skips_blank(tmp_path):
    p = write(tmp_path, [CANON, "", {"messages": CANON["conversations"]}])
    assert [n for n, _ in iter_jsonl(p, kind="chat")] == [1, 3]


def test_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "a"}).encode() + b"\n")
    assert list(iter_jsonl(p, kind="text")) == [(1, {"text": "a"})]


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_a_json_array_reads_with_or_without_a_bom_as_jsonl_does(tmp_path, bom):
    items = [{"instruction": "hi", "output": "hello"}, {"instruction": "caf\u00e9", "output": "ok"}]
    p = tmp_path / "alpaca_data.json"
    p.write_bytes(bom + b"\n  " + json.dumps(items, ensure_ascii=False, indent=2).encode())
    assert is_json_array(p) and read_json_array(p) == items
    jsonl = write(tmp_path, [bom + json.dumps(items[0]).encode()])
    assert not is_json_array(jsonl) and [r for _, r in iter_jsonl(jsonl)] == [normalize_record(items[0], "x")]


def test_the_data_tools_read_a_json_array_with_a_bom(tmp_path, capsys):
    """convert_data.py and the selection's sample reader (select_data.py) read Alpaca's array through the
    one reader (dataset/files.py), a byte-order mark and all."""
    from scripts import convert_data
    from selection.samples import read_samples
    items = [{"instruction": "hi", "output": "hello"}, {"instruction": "caf\u00e9", "output": "ok"}]
    p = tmp_path / "alpaca_data.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(items, ensure_ascii=False).encode())
    assert [s.raw for s in read_samples(p)] == items
    convert_data.main([str(p), "-o", str(tmp_path / "out.jsonl")])
    assert [r for _, r in iter_jsonl(tmp_path / "out.jsonl")] == [normalize_record(i, "x") for i in items]


@pytest.mark.parametrize("content,fragment", [
    (b'[{"instruction": "hi"},', "a.json:1: malformed JSON"),
    (b'\xef\xbb\xbf[{"instruction": "\xff"}]', "a.json: bytes that are not UTF-8"),
    (b'\xef\xbb\xbf' + b'[' * 100000, "a.json: JSON nested too deeply"),
], ids=["malformed", "not_utf8", "too_deep"])
def test_a_bad_json_array_is_one_line(tmp_path, content, fragment):
    p = tmp_path / "a.json"
    p.write_bytes(content)
    with pytest.raises(UserError) as e:
        read_json_array(p)
    assert str(e.value).startswith(f"{tmp_path}/{fragment}") and "\n" not in str(e.value), e.value


def test_a_fifo_or_a_device_is_refused_without_waiting(tmp_path):
    """Opening a FIFO nothing writes to blocks for ever: a reader says what it is instead (if it opened it,
    the test would hang, not fail: nothing here writes to it)."""
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"data.jsonl: is a FIFO \(named pipe\): reading it would wait for a writer"):
        list(iter_jsonl(fifo))
    with pytest.raises(UserError, match=r"^/dev/zero: is a device or socket: reading it may never end"):
        list(iter_jsonl("/dev/zero"))
    assert not is_json_array(fifo)


@pytest.mark.parametrize("lines,fragment", [
    ([CANON, "{not json"], "x.jsonl:2: malformed JSON"),
    ([CANON, b"{\"text\": \"\xff\xfe\"}"], "x.jsonl:2: bytes that are not UTF-8"),
    ([CANON, {"foo": 1}], 'x.jsonl:2: missing "conversations"'),
    ([CANON, CANON, "[]"], "x.jsonl:3: the line is a JSON list"),
])
def test_iter_jsonl_bad_lines(tmp_path, lines, fragment):
    p = write(tmp_path, lines)
    with pytest.raises(UserError, match=None) as e:
        list(iter_jsonl(p, kind="chat"))
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_file_level_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(UserError, match=r"empty.jsonl: file is empty"):
        list(iter_jsonl(empty))
    with pytest.raises(UserError, match="is a directory"):
        list(iter_jsonl(tmp_path))
    with pytest.raises(UserError, match="no such file"):
        list(iter_jsonl(tmp_path / "missing.jsonl"))


def test_skip_bad_counts_and_reports(tmp_path):
    p = write(tmp_path, [CANON, "{oops", {"foo": 1}, CANON, b"\xff"])
    seen = []
    reader = iter_jsonl(p, skip_bad=True, kind="chat", on_bad=seen.append)
    assert [n for n, _ in reader] == [1, 4]
    assert reader.n_bad == 3 and reader.n_good == 2
    assert [m.split(":")[1] for m in seen] == ["2", "3", "5"]


def test_all_bad_with_skip_is_not_called_empty(tmp_path):
    p = write(tmp_path, ["{oops"])
    reader = iter_jsonl(p, skip_bad=True)
    assert list(reader) == [] and reader.n_bad == 1


# a JSON line that json.loads accepts but whose text no UTF-8 file or tokenizer can hold, in every field
SURROGATE = "\\ud800"
SURROGATE_LINES = {
    "content": ('{"conversations": [{"role": "user", "content": "hi %s"}, {"role": "assistant", "content": "x"}]}',
                "conversations[0].content"),
    "text": ('{"text": "abc %s"}', "text"),
    "instruction": ('{"instruction": "q %s", "output": "a"}', "instruction"),
    "system": ('{"instruction": "q", "output": "a", "system": "%s"}', "system"),
    "history": ('{"instruction": "q", "output": "a", "history": [["q0", "a0 %s"]]}', "history[0][1]"),
    "sharegpt": ('{"conversations": [{"from": "human", "value": "%s"}, {"from": "gpt", "value": "a"}]}',
                 "conversations[0].value"),
    "openai_part": ('{"messages": [{"role": "user", "content": [{"type": "text", "text": "%s"}]}, '
                    '{"role": "assistant", "content": "a"}]}', "messages[0].content[0].text"),
    "passthrough": ('{"text": "ok", "answers": ["fine", "bad %s"]}', "answers[1]"),
    "low_half": ('{"text": "x \\udc00 y"}', "text"),
    "key": ('{"text": "ok", "note%s": 1}', "a key of the line"),
    "odd_key": ('{"text": "ok", "a b\\n": "%s"}', "['a b\\n']"),
}


@pytest.mark.parametrize("case", sorted(SURROGATE_LINES))
def test_unpaired_surrogate_is_refused_with_its_field(tmp_path, case):
    template, field = SURROGATE_LINES[case]
    line = template.replace("%s", SURROGATE)
    p = write(tmp_path, [CANON, line])
    with pytest.raises(UserError) as e:
        list(iter_jsonl(p, kind="any"))
    msg = str(e.value)
    assert msg.startswith(f"{p}:2: {field}") and "surrogate" in msg and "\n" not in msg, msg
    msg.encode("utf-8")                 # the message itself can be printed
    with pytest.raises(UserError, match="surrogate"):   # the same through normalize_record (convert_data's path)
        normalize_record(json.loads(line), "f:1")


def test_surrogate_pair_and_escaped_backslash_are_fine(tmp_path):
    p = write(tmp_path, ['{"text": "emoji \\ud83d\\ude00 and a literal \\\\ud800"}'])
    assert list(iter_jsonl(p, kind="text")) == [(1, {"text": "emoji \U0001F600 and a literal \\ud800"})]


def test_deeply_nested_json_is_one_line(tmp_path):
    p = write(tmp_path, [CANON, '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"])
    with pytest.raises(UserError) as e:
        list(iter_jsonl(p))
    assert str(e.value).startswith(f"{p}:2: JSON nested too deeply") and "\n" not in str(e.value)


@pytest.mark.parametrize("history,fragment", [
    (5, "'history' is int"), ("q a", "'history' is str"), ({"q": "a"}, "'history' is dict"), (True, "is bool"),
    ([["q", "a", "extra"]], "history item 0"), ([["q", 1]], "history item 0"), (["q", "a"], "history item 0"),
])
def test_alpaca_history_of_the_wrong_type(history, fragment):
    with pytest.raises(UserError) as e:
        normalize_record({"instruction": "q", "output": "a", "history": history}, "f.jsonl:3", kind="chat")
    msg = str(e.value)
    assert msg.startswith("f.jsonl:3: ") and fragment in msg and '"history": [["q", "a"], ...]' in msg


@pytest.mark.parametrize("speaker", [["human"], {"a": 1}, 3, None])
def test_speaker_that_is_not_a_string(speaker):
    for key, content in (("from", "value"), ("role", "content")):
        obj = {"conversations": [{key: speaker, content: "hi"}, {key: "gpt" if key == "from" else "assistant",
                                                               content: "a"}]}
        with pytest.raises(UserError, match=f"message 0 '{key}' is"):
            normalize_record(obj, "f:1", kind="chat")

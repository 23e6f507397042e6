"""Property-based tests (hypothesis): for generated JSONL lines, flag values and file contents, the readers
and the command-line checks either work or say one line (UserError / exit 2); never a traceback, never a
file written. The case counts are kept small for CI (see SETTINGS).

    pytest tests/test_fuzz.py
"""
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import eval_model
from core.cli import run_cli
from dataset.formats import iter_jsonl
from checkpoint.pth import load_checkpoint
from core.errors import UserError
from trainer.args import parse_args

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

KEYS = ["conversations", "messages", "role", "content", "from", "value", "text", "instruction", "input",
        "output", "history", "system", "type", "answers"]
ROLES = ["user", "assistant", "system", "human", "gpt", "wizard", ""]
# strings with what breaks naive readers: unpaired surrogates, NUL, control and combining characters
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(ROLES), st.just("\ud800"), st.just("a\udfffb"),
                 st.just("\x00"), st.just("\u0301\u200b"))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=20)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": st.one_of(TEXT, JSON)})
RECORD = st.one_of(
    JSON,
    st.fixed_dictionaries({"conversations": st.lists(MESSAGE, max_size=4)}),
    st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=4)}),
    st.fixed_dictionaries({"instruction": TEXT, "output": TEXT, "history": JSON}),
    st.fixed_dictionaries({"text": st.one_of(TEXT, JSON)}))


def every_string(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from every_string(k)
            yield from every_string(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from every_string(v)


@SETTINGS
@given(records=st.lists(RECORD, min_size=1, max_size=3), kind=st.sampled_from(["chat", "prompt", "text", "any"]))
def test_reader_accepts_or_names_the_line(tmp_path_factory, tokenizer, records, kind):
    path = tmp_path_factory.mktemp("fuzz") / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    try:
        out = list(iter_jsonl(path, kind=kind))
    except UserError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        return
    for _, rec in out:       # what passes validation can be tokenized: no surrogate reaches the tokenizer
        for s in every_string(rec):
            s.encode("utf-8")
            tokenizer.encode(s)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_reader_on_raw_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "raw.jsonl"
    path.write_bytes(data)
    try:
        list(iter_jsonl(path, kind="any"))
    except UserError as e:
        assert "\n" not in str(e)


@SETTINGS
@given(data=st.one_of(st.binary(max_size=400), st.builds(lambda b: b"PK\x03\x04" + b, st.binary(max_size=200))))
def test_checkpoint_reader_on_garbage(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "x.pth"
    path.write_bytes(data)
    with pytest.raises(UserError):
        load_checkpoint(path)


NUMBER = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from(["nan", "inf", "-inf", "1e309", "0x10", "", "abc", "1,5"]))
TRAIN_FLAGS = ["learning_rate", "batch_size", "accumulation_steps", "max_seq_len", "epochs", "max_steps",
               "warmup_iters", "grad_clip", "weight_decay", "num_workers", "eval_batches", "eval_interval",
               "save_interval", "keep_last", "lora_rank", "lora_alpha", "lora_dropout", "val_ratio",
               "hidden_size", "num_hidden_layers", "ddp_timeout", "log_interval", "seed"]
TEXT_FLAGS = {"device": st.sampled_from(["cpu", "cuda", "cuda:7", "tpu", "mps", "", "CPU", "cpu:0", "gpu"]),
              "lora_name": st.one_of(st.text(max_size=10), st.sampled_from(["../x", "a/b", ".hidden", "ok_1"]))}


def flag_argv(draw_values):
    return [f"--{k}={v}" for k, v in draw_values.items()]


def says_one_line(fn, capsys):
    """fn() returns, or exits 2 with one 'error: ...' line: anything else fails the test."""
    try:
        run_cli(fn)
    except SystemExit as e:
        err = capsys.readouterr().err.strip()
        assert e.code == 2 and err.startswith("error: ") and "\n" not in err, err
        return err
    return None


@SETTINGS
@given(values=st.dictionaries(st.sampled_from(TRAIN_FLAGS), NUMBER, max_size=4), device=TEXT_FLAGS["device"],
       name=TEXT_FLAGS["lora_name"])
def test_trainer_flags(tmp_path_factory, capsys, values, device, name):
    out = tmp_path_factory.mktemp("fuzz") / "out"
    argv = flag_argv(values) + [f"--device={device}", f"--lora_name={name}", "--out_dir", str(out)]
    result = {}

    def parse():
        result["cfg"] = parse_args("lora", argv)
    says_one_line(parse, capsys)
    cfg = result.get("cfg")
    if cfg is not None:      # what passes is in range
        assert cfg.learning_rate > 0 and math.isfinite(cfg.learning_rate) and cfg.batch_size >= 1
        assert 0 <= cfg.lora_dropout < 1 and "/" not in cfg.lora_name and ".." not in cfg.lora_name
    assert not out.exists()


EVAL_FLAGS = ["temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "batch_size",
              "history_cnt", "hidden_size"]


@SETTINGS
@given(values=st.dictionaries(st.sampled_from(EVAL_FLAGS), NUMBER, max_size=4), device=TEXT_FLAGS["device"])
def test_eval_flags(capsys, values, device):
    argv = flag_argv(values) + [f"--device={device}"]
    result = {}

    def parse():
        result["args"] = eval_model.parse_args(argv)
    says_one_line(parse, capsys)
    args = result.get("args")
    if args is not None:
        assert 0 < args.top_p <= 1 and args.top_k >= 0 and args.repetition_penalty > 0 and args.batch_size >= 1
        assert args.temperature is None or (args.temperature >= 0 and math.isfinite(args.temperature))

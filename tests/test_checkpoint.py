"""Self-describing checkpoints: round trip, names, and one-line errors for bad files."""
import subprocess
import sys

import pytest
import torch

from checkpoint.pth import load_checkpoint, load_model, model_from_checkpoint, save_checkpoint
from checkpoint.layout import checkpoint_name
from core.errors import UserError


def test_round_trip_identical_logits(tiny_checkpoint, tiny_config, tokenizer):
    from model.model import TinyMindForCausalLM
    torch.manual_seed(0)
    original = TinyMindForCausalLM(tiny_config).eval()
    model, tok, ckpt = load_model(tiny_checkpoint)
    ids = torch.randint(0, tiny_config.vocab_size, (2, 12))
    with torch.no_grad():
        assert torch.equal(original(ids).logits, model(ids).logits)
    assert tok.sha256 == tokenizer.sha256
    assert ckpt["meta"]["stage"] == "full_sft" and "created" in ckpt["meta"]
    assert ckpt["config"]["hidden_size"] == 64
    assert not list(tiny_checkpoint.parent.glob("*.tmp*"))  # nothing half-written left behind


def test_names_follow_minimind():
    assert checkpoint_name("pretrain", 512) == "pretrain_512.pth"
    assert checkpoint_name("full_sft", 768, use_moe=True) == "full_sft_768_moe.pth"
    assert checkpoint_name("lora", 512, lora_name="lora_music") == "lora/lora_music_512.pth"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign", "missing", "directory"])
def test_bad_files_give_one_line(tmp_path, tiny_checkpoint, damage):
    bad = tmp_path / "bad.pth"
    if damage == "truncate":
        bad.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    elif damage == "garbage":
        bad.write_bytes(b"not a checkpoint at all" * 10)
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
    elif damage == "directory":
        bad.mkdir()
    with pytest.raises(UserError) as e:
        load_checkpoint(bad)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg


def test_truncated_checkpoint_cli_message(tmp_path, tiny_checkpoint):
    bad = tmp_path / "cut.pth"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:-100])
    code = ("import sys; sys.path.insert(0, %r); from core.cli import run_cli; "
            "from checkpoint.pth import load_model; run_cli(load_model, %r)" % (str(sys.path[0]), str(bad)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "cut.pth" in r.stderr
    assert "Traceback" not in r.stderr


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    bad = tmp_path / "evil.pth"
    torch.save({"format": "tinymind-checkpoint-v1", "model": Evil()}, bad)
    with pytest.raises(UserError) as e:
        load_checkpoint(bad)
    msg = str(e.value)   # one line that says why, without the ANSI colours of torch's long message
    assert "\n" not in msg and "Python objects" in msg and "weights_only" in msg and "\x1b" not in msg


def test_save_is_atomic_on_failure(tmp_path, tiny_config, tokenizer, monkeypatch):
    path = tmp_path / "x.pth"
    save_checkpoint(path, {"w": torch.zeros(2)}, tiny_config, tokenizer, {"stage": "test"})
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"w": torch.ones(2)}, tiny_config, tokenizer, {"stage": "test"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.pth"]


def one_line_error(path):
    """load_checkpoint(path) fails with one line naming the file; returns the message."""
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    return msg


@pytest.mark.parametrize("content,fragment", [
    (b"just some text, saved under a .pth name\n", "is not a PyTorch file"),
    (b"", "is empty"),
    (b"\x80", "not a readable checkpoint"),                      # IndexError inside the unpickler
    (b"PK\x03\x04" + b"\x00" * 40, "not a readable checkpoint"),   # a broken zip
])
def test_any_unreadable_file_is_one_line(tmp_path, content, fragment):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    assert fragment in one_line_error(bad)


def test_a_zip_that_is_not_torch_is_one_line(tmp_path):
    import zipfile
    bad = tmp_path / "bad.pth"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("notes.txt", "hello")
    assert "not a readable checkpoint" in one_line_error(bad)


def test_interrupt_is_not_swallowed(tmp_path, tiny_checkpoint, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_checkpoint(tiny_checkpoint)


def crafted(tmp_path, tiny_checkpoint, **entries):
    """tiny_checkpoint with some entries replaced (None deletes one), saved with torch.save."""
    obj = torch.load(tiny_checkpoint, weights_only=True)
    for key, value in entries.items():
        obj[key] = value
    path = tmp_path / "crafted.pth"
    torch.save(obj, path)
    return path


GOOD_CONFIG = {}   # filled from the fixture: tiny_config.to_dict()
BAD_CONFIGS = {
    "not_a_dict": (lambda c: [1, 2, 3], "'config' entry is list"),
    "unknown_field": (lambda c: {**c, "wibble": 1}, "'wibble'"),
    "str_for_int": (lambda c: {**c, "hidden_size": "64"}, "hidden_size = '64' (str)"),
    "bool_for_int": (lambda c: {**c, "num_hidden_layers": True}, "num_hidden_layers = True (bool)"),
    "nan_float": (lambda c: {**c, "rope_theta": float("nan")}, "rope_theta = nan"),
    "zero_heads": (lambda c: {**c, "num_attention_heads": 0}, "num_attention_heads"),
    "negative_vocab": (lambda c: {**c, "vocab_size": -5}, "vocab_size"),
    "inconsistent_heads": (lambda c: {**c, "num_key_value_heads": 3}, "num_key_value_heads"),
    "huge_width": (lambda c: {**c, "hidden_size": 10**7, "head_dim": 16}, "embed_tokens"),  # must not allocate
    "huge_mlp": (lambda c: {**c, "intermediate_size": 10**9}, "intermediate_size"),
    "more_layers": (lambda c: {**c, "num_hidden_layers": 5}, "num_hidden_layers = 5"),
    "other_vocab": (lambda c: {**c, "vocab_size": 100}, "vocab_size, hidden_size"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_garbage_config_is_one_line(tmp_path, tiny_checkpoint, case):
    config = torch.load(tiny_checkpoint, weights_only=True)["config"]
    make, fragment = BAD_CONFIGS[case]
    path = crafted(tmp_path, tiny_checkpoint, config=make(config))
    msg = one_line_error(path)
    assert "'config' entry" in msg and fragment in msg, msg
    with pytest.raises(UserError, match="'config' entry"):     # also when the dict is handed over directly
        model_from_checkpoint(torch.load(path, weights_only=True), where=str(path))


def test_weights_of_another_shape_are_one_line(tmp_path, tiny_checkpoint):
    weights = torch.load(tiny_checkpoint, weights_only=True)["model"]
    weights["model.layers.1.mlp.down_proj.weight"] = torch.zeros(3, 3)
    path = crafted(tmp_path, tiny_checkpoint, model=weights)
    with pytest.raises(UserError) as e:
        load_model(path)
    assert str(e.value).startswith(f"{path}: weights do not match") and "down_proj" in str(e.value)


@pytest.mark.parametrize("entry,value,fragment", [
    ("model", [1, 2], "'model' entry"),
    ("model", {"w": "not a tensor"}, "'model' entry"),
    ("meta", "yesterday", "'meta' entry"),
])
def test_garbage_model_or_meta_entry(tmp_path, tiny_checkpoint, entry, value, fragment):
    assert fragment in one_line_error(crafted(tmp_path, tiny_checkpoint, **{entry: value}))


def tokenizer_variants(state):
    return {
        "not_a_dict": ("hello", "is str"),
        "unknown_type": ({**state, "type": "wordpiece"}, "unknown tokenizer type 'wordpiece'"),
        "type_unhashable": ({**state, "type": ["sentencepiece"]}, "unknown tokenizer type"),
        "garbage_bytes": ({**state, "model": b"\x00garbage" * 10}, "cannot be rebuilt"),
        "truncated_bytes": ({**state, "model": state["model"][:500]}, "cannot be rebuilt"),
        "str_model": ({**state, "model": "abc"}, "holds str"),
        "no_model": ({k: v for k, v in state.items() if k != "model"}, "lacks the field 'model'"),
        "template_str": ({**state, "chat_template": "chatml"}, "chat_template of type str"),
        "template_field": ({**state, "chat_template": {"nonsense": 1}}, "unknown chat_template field 'nonsense'"),
        "template_type": ({**state, "chat_template": {**state["chat_template"], "end": 5}}, "chat_template.end"),
        "hf_no_json": ({"type": "hf_json", "chat_template": {}}, "lacks the field 'tokenizer_json'"),
        "hf_bad_json": ({"type": "hf_json", "tokenizer_json": "{not json", "eos_token": "x", "pad_token": "",
                         "bos_token": "", "add_bos": False, "chat_template": {}}, "cannot be rebuilt"),
    }


@pytest.mark.parametrize("case", sorted(tokenizer_variants({"model": b"", "chat_template": {}})))
def test_garbage_tokenizer_is_one_line(tmp_path, tiny_checkpoint, tokenizer, case, capfd):
    from tokenizer.tokenizer import load_tokenizer_from_state
    state, fragment = tokenizer_variants(tokenizer.to_state())[case]
    path = crafted(tmp_path, tiny_checkpoint, tokenizer=state)
    msg = one_line_error(path)
    assert "'tokenizer' entry" in msg and fragment in msg, msg
    with pytest.raises(UserError) as e:
        load_tokenizer_from_state(state, where="x.pth")
    assert str(e.value).startswith("x.pth: the 'tokenizer' entry") and "\n" not in str(e.value)
    assert capfd.readouterr().err == ""             # nothing printed by sentencepiece behind our back


def test_empty_tokenizer_model_is_one_line_and_silent(tokenizer, capfd):
    # (torch.save cannot write b"" so that weights_only loads it; the state is handed over directly)
    from tokenizer.tokenizer import load_tokenizer_from_state
    with pytest.raises(UserError, match=r"^x.pth: the 'tokenizer' entry holds an empty model"):
        load_tokenizer_from_state({**tokenizer.to_state(), "model": b""}, where="x.pth")
    assert capfd.readouterr().err == ""             # sentencepiece would log "Model is not initialized"

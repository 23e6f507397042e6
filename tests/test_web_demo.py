"""The Streamlit web demo, driven by Streamlit's own testing API (no browser): pytest tests/test_web_demo.py"""
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "scripts" / "web_demo.py")


def save_tiny(out_dir, tokenizer, name="full_sft_64.pth", stage="full_sft", seed=0, **overrides):
    from model.checkpoint import save_checkpoint
    from model.config import get_preset
    from model.model import TinyMindForCausalLM
    cfg = get_preset("tiny", vocab_size=tokenizer.vocab_size, **overrides)
    torch.manual_seed(seed)
    model = TinyMindForCausalLM(cfg)
    path = Path(out_dir) / name
    save_checkpoint(path, model.state_dict(), cfg, tokenizer, {"stage": stage, "step": 7})
    return path, model, cfg


def save_adapter_for(out_dir, tokenizer, base_path, cfg, name):
    from model.checkpoint import file_sha256
    from model.lora import LoRAConfig, apply_lora, save_adapter
    from model.model import TinyMindForCausalLM
    model = TinyMindForCausalLM(cfg)
    lcfg = LoRAConfig(r=4, alpha=8)
    apply_lora(model, lcfg)
    path = Path(out_dir) / "lora" / name
    save_adapter(path, model, lcfg, base_path, file_sha256(base_path) if Path(base_path).exists() else "0" * 64,
                 cfg, tokenizer.sha256, {"step": 3})
    return path


def app(monkeypatch, out_dir):
    monkeypatch.setenv("TINYMIND_OUT_DIR", str(out_dir))
    at = AppTest.from_file(APP, default_timeout=60)
    return at.run()


def reply_text(at):
    msgs = [m for m in at.chat_message if m.name == "assistant"]
    return msgs[-1].markdown[0].value if msgs and msgs[-1].markdown else None


def test_empty_out_dir_says_which_command(monkeypatch, tmp_path):
    at = app(monkeypatch, tmp_path / "out")
    assert not at.exception
    assert any("python scripts/quickstart.py" in c.value for c in at.code)
    assert not at.chat_input


@pytest.fixture
def out_dir(tmp_path, tokenizer):
    out = tmp_path / "out"
    base, _, cfg = save_tiny(out, tokenizer)
    save_adapter_for(out, tokenizer, base, cfg, "lora_ok_64.pth")
    # another shape: must not be offered for full_sft_64.pth
    _, _, other = save_tiny(tmp_path / "elsewhere", tokenizer, num_hidden_layers=3)
    save_adapter_for(out, tokenizer, tmp_path / "elsewhere" / "full_sft_64.pth", other, "lora_bad_64.pth")
    return out


def test_chat_controls_and_clear(monkeypatch, out_dir, tokenizer):
    at = app(monkeypatch, out_dir)
    assert not at.exception
    assert at.sidebar.selectbox(key="base").value == "full_sft_64.pth"
    # only the compatible adapter is listed
    options = at.sidebar.selectbox(key="adapter").options
    assert "lora/lora_ok_64.pth" in options and "lora/lora_bad_64.pth" not in options

    at.sidebar.number_input(key="max_new_tokens").set_value(8)
    at.sidebar.slider(key="temperature").set_value(0.0)
    at.chat_input[0].set_value("Hello there").run()
    assert not at.exception
    assert reply_text(at) is not None and at.session_state.last_stats["new_tokens"] >= 1
    first = at.session_state.messages[-1]["content"]
    assert at.session_state.last_stats["new_tokens"] <= 8
    assert [m["role"] for m in at.session_state.messages] == ["user", "assistant"]
    assert "tok/s" in at.sidebar.metric[0].value

    # the length control really acts: one new token
    at.sidebar.number_input(key="max_new_tokens").set_value(1)
    at.chat_input[0].set_value("Hello again").run()
    assert not at.exception
    assert at.session_state.last_stats["new_tokens"] == 1
    assert len(tokenizer.encode(at.session_state.messages[-1]["content"])) <= 2
    assert len(at.session_state.messages) == 4

    # greedy is deterministic; the same question gives the same answer with the adapter off
    at.sidebar.number_input(key="max_new_tokens").set_value(8)
    at.sidebar.slider(key="history_turns").set_value(0)
    at.chat_input[0].set_value("Hello there").run()
    assert at.session_state.messages[-1]["content"] == first

    at.sidebar.button(key="clear").click().run()
    assert not at.exception
    assert at.session_state.messages == []
    assert not [m for m in at.chat_message]


def test_adapter_is_loaded_and_shown(monkeypatch, out_dir):
    at = app(monkeypatch, out_dir)
    at.sidebar.selectbox(key="adapter").set_value("lora/lora_ok_64.pth").run()
    assert not at.exception
    info = " ".join(m.value for m in at.sidebar.markdown)
    assert "lora_ok_64.pth" in info and "full_sft" in info
    at.chat_input[0].set_value("hi").run()
    assert not at.exception and reply_text(at) is not None


def test_only_files_inside_out_dir(tmp_path):
    from model.chat_session import inside
    from model.errors import UserError
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "secret.pth").write_bytes(b"x")
    (out / "link.pth").symlink_to(tmp_path / "secret.pth")
    assert inside(out, "a.pth") == (out / "a.pth").resolve()
    for bad in ("../secret.pth", str(tmp_path / "secret.pth"), "link.pth"):
        with pytest.raises(UserError):
            inside(out, bad)

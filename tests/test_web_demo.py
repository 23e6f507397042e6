"""The Streamlit web demo, driven by Streamlit's own testing API (no browser): pytest tests/test_web_demo.py"""

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from factories import REPO, make_adapter, make_checkpoint  # noqa: E402
from model.lora import LoRAConfig  # noqa: E402

APP = str(REPO / "scripts" / "web_demo.py")


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
def out_dir(tmp_path):
    out = tmp_path / "out"
    base = make_checkpoint(out / "full_sft_64.pth", meta={"step": 7})
    make_adapter(out / "lora" / "lora_ok_64.pth", base, lora=LoRAConfig(r=4, alpha=64))
    # another shape: must not be offered for full_sft_64.pth
    other = make_checkpoint(tmp_path / "elsewhere" / "full_sft_64.pth", num_hidden_layers=3)
    make_adapter(out / "lora" / "lora_bad_64.pth", other)
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


def greedy_reply(out_dir, prompt, **source):
    """The reply the demo must give, computed without the app (the same loader, greedy)."""
    from model.generate import chat
    from model.inference import load_for_inference
    m = load_for_inference(**source, out=out_dir)
    return "".join(chat(m.model, m.tokenizer, [{"role": "user", "content": prompt}], max_new_tokens=12,
                        temperature=0.0))


def test_adapter_is_loaded_and_shown(monkeypatch, out_dir):
    at = app(monkeypatch, out_dir)
    at.sidebar.number_input(key="max_new_tokens").set_value(12)
    at.sidebar.slider(key="temperature").set_value(0.0)
    at.sidebar.slider(key="history_turns").set_value(0)
    at.chat_input[0].set_value("hi").run()
    without = at.session_state.messages[-1]["content"]
    at.sidebar.selectbox(key="adapter").set_value("lora/lora_ok_64.pth").run()
    assert not at.exception
    info = " ".join(m.value for m in at.sidebar.markdown)
    assert "lora_ok_64.pth" in info and "full_sft" in info
    at.chat_input[0].set_value("hi").run()
    assert not at.exception
    with_adapter = at.session_state.messages[-1]["content"]
    # the adapter (non-zero B) is really applied: its reply is the adapter's, not the base's
    assert without == greedy_reply(out_dir, "hi", ckpt=out_dir / "full_sft_64.pth")
    assert with_adapter == greedy_reply(out_dir, "hi", adapter=out_dir / "lora" / "lora_ok_64.pth")
    assert with_adapter != without


def test_only_files_inside_out_dir(tmp_path):
    from model.paths import inside
    from model.errors import UserError
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "secret.pth").write_bytes(b"x")
    (out / "link.pth").symlink_to(tmp_path / "secret.pth")
    assert inside(out, "a.pth") == (out / "a.pth").resolve()
    for bad in ("../secret.pth", str(tmp_path / "secret.pth"), "link.pth"):
        with pytest.raises(UserError):
            inside(out, bad)

"""The Streamlit web demo, driven by Streamlit's own testing API (no browser): pytest tests/test_web_demo.py"""
import builtins
import json
import os
import shutil
import time

import pytest

pytest.importorskip("streamlit")
import torch  # noqa: E402
from streamlit import config as st_config  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from factories import REPO, make_adapter, make_checkpoint  # noqa: E402
from checkpoint.pth import read_pth  # noqa: E402
from core.errors import UserError  # noqa: E402
from model.lora import LoRAConfig  # noqa: E402

APP = str(REPO / "scripts" / "web_demo.py")
GENERIC_ERROR = "Something went wrong on the server; the details are in its log."


@pytest.fixture(autouse=True)
def restore_config():
    """After each test (and after monkeypatch has restored the current folder), Streamlit's settings as
    they were."""
    yield
    st_config.get_config_options(force_reparse=True)


def read_config(monkeypatch, folder, flags=None):
    """Streamlit's settings as `streamlit run` started in folder reads them (.streamlit/config.toml there),
    with flags ({"server.address": ...}) given on its command line."""
    monkeypatch.chdir(folder)
    st_config.get_config_options(force_reparse=True, options_from_flags=flags or {})


def app(monkeypatch, out_dir, folder=REPO, flags=None):
    """The demo as `streamlit run scripts/web_demo.py` from folder (default: the repository root) runs it."""
    monkeypatch.setenv("TINYMIND_OUT_DIR", str(out_dir))
    read_config(monkeypatch, folder, flags)
    at = AppTest.from_file(APP, default_timeout=60)
    return at.run()


def page_text(at):
    """Everything the page shows as text (main area and sidebar)."""
    parts = [e.value for kind in (at.markdown, at.caption, at.error, at.warning, at.code) for e in kind]
    return "\n".join(parts + [e.message + str(e.stack_trace) for e in at.exception])


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

    # greedy is deterministic: the same question gives the same answer
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
    from inference.generate import chat
    from inference.load import load_for_inference
    m = load_for_inference(**source, out=out_dir)
    return "".join(chat(m.model, m.tokenizer, [{"role": "user", "content": prompt}], max_new_tokens=12,
                        temperature=0.0))


def test_adapter_is_loaded_and_shown(monkeypatch, out_dir):
    at = app(monkeypatch, out_dir)
    at.sidebar.selectbox(key="adapter").set_value("(none)")
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


def test_the_precision_picker_loads_the_model_quantised(monkeypatch, out_dir):
    at = app(monkeypatch, out_dir)
    assert at.sidebar.selectbox(key="dtype").value == "float32"
    assert "float16" not in at.sidebar.selectbox(key="dtype").options          # no fast float16 on a CPU
    at.sidebar.selectbox(key="adapter").set_value("lora/lora_ok_64.pth")
    at.sidebar.selectbox(key="dtype").set_value("int8")
    at.sidebar.number_input(key="max_new_tokens").set_value(12)
    at.sidebar.slider(key="temperature").set_value(0.0)
    at.chat_input[0].set_value("hi").run()
    assert not at.exception
    assert "int8" in " ".join(m.value for m in at.sidebar.markdown)
    adapter = out_dir / "lora" / "lora_ok_64.pth"
    assert at.session_state.messages[-1]["content"] == greedy_reply(out_dir, "hi", adapter=adapter, dtype="int8")


def age(path, seconds):
    """Set path's modification time to `seconds` ago."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_starts_on_the_newest_adapter_with_its_base(monkeypatch, tmp_path):
    out = tmp_path / "out"
    sft = make_checkpoint(out / "full_sft_64.pth")
    pre = make_checkpoint(out / "pretrain_64.pth", stage="pretrain", seed=1)
    make_adapter(out / "lora" / "lora_a_64.pth", sft)
    make_adapter(out / "lora" / "lora_b_64.pth", sft)
    age(out / "lora" / "lora_a_64.pth", 20)
    at = app(monkeypatch, out)
    assert not at.exception
    # both fit; the newer one is on, not the first by name, and its base
    assert at.sidebar.selectbox(key="adapter").value == "lora/lora_b_64.pth"
    assert at.sidebar.selectbox(key="base").value == "full_sft_64.pth"
    assert "lora_b_64.pth" in " ".join(m.value for m in at.sidebar.markdown)
    # the visitor's choice is kept from then on
    at.sidebar.selectbox(key="adapter").set_value("(none)").run()
    at.sidebar.slider(key="temperature").set_value(0.0).run()
    assert at.sidebar.selectbox(key="adapter").value == "(none)"

    # modification time decides, not the name
    age(out / "lora" / "lora_b_64.pth", 40)
    at = app(monkeypatch, out)
    assert at.sidebar.selectbox(key="adapter").value == "lora/lora_a_64.pth"
    # the base shown first is the one the newest adapter was trained on, not the full SFT checkpoint
    make_adapter(out / "lora" / "lora_c_64.pth", pre)
    at = app(monkeypatch, out)
    assert at.sidebar.selectbox(key="base").value == "pretrain_64.pth"
    assert at.sidebar.selectbox(key="adapter").value == "lora/lora_c_64.pth"


def test_only_files_inside_out_dir(tmp_path):
    from checkpoint.layout import inside
    from core.errors import UserError
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "secret.pth").write_bytes(b"x")
    (out / "link.pth").symlink_to(tmp_path / "secret.pth")
    assert inside(out, "a.pth") == (out / "a.pth").resolve()
    for bad in ("../secret.pth", str(tmp_path / "secret.pth"), "link.pth"):
        with pytest.raises(UserError):
            inside(out, bad)


def test_shipped_config_keeps_the_demo_private(monkeypatch):
    from streamlit.config import ShowErrorDetailsConfigOptions
    read_config(monkeypatch, REPO)
    assert st_config.get_where_defined("server.address") == str(REPO / ".streamlit" / "config.toml")
    assert st_config.get_option("server.address") == "127.0.0.1"
    # a value this streamlit knows, and the one that shows neither traceback nor message nor type
    assert ShowErrorDetailsConfigOptions(st_config.get_option("client.showErrorDetails")) == "none"
    assert st_config.get_option("browser.gatherUsageStats") is False
    assert st_config.get_option("server.fileWatcherType") == "none"


def test_started_elsewhere_refuses_to_serve(monkeypatch, out_dir, tmp_path):
    # from another folder the config is not read and streamlit listens on every interface
    at = app(monkeypatch, out_dir, folder=tmp_path)
    assert not at.exception
    assert "--server.address 127.0.0.1" in at.error[0].value and "repository root" in at.error[0].value
    assert not at.chat_input and not at.sidebar.selectbox
    # an address given on purpose is kept: --server.address 0.0.0.0
    at = app(monkeypatch, out_dir, folder=tmp_path, flags={"server.address": "0.0.0.0"})
    assert not at.exception and not at.error and at.chat_input


def deny_reading(monkeypatch, path):
    """path without read permission; as root (who reads anything) the refusal the OS gives others is faked."""
    path.chmod(0)
    if os.access(path, os.R_OK):
        real_open, real_access = builtins.open, os.access

        def fake_open(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(path):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)
        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.fspath(p) != str(path)
                            and real_access(p, mode, **kw))


def damage(out_dir, monkeypatch):
    """One unreadable file of each kind in out/ and out/lora/; -> their names as the sidebar gives them."""
    good, ok = out_dir / "full_sft_64.pth", out_dir / "lora" / "lora_ok_64.pth"
    (out_dir / "garbage_64.pth").write_bytes(os.urandom(4000))
    (out_dir / "notes_64.pth").write_text("a text file, not a checkpoint\n")
    (out_dir / "pretrain_64.pth").write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    for name, key, value in (("badcfg_64.pth", "config", "garbage"),
                             ("badtok_64.pth", "tokenizer", {"type": "sentencepiece", "model": b"junk"})):
        obj = read_pth(good)
        obj[key] = value
        torch.save(obj, out_dir / name)
    for name, key, value in (("lora_cfg_64.pth", "config", {"hidden_size": "x"}),
                             ("lora_weights_64.pth", "lora", {"nope": torch.zeros(2)})):
        obj = read_pth(ok)
        obj[key] = value
        torch.save(obj, out_dir / "lora" / name)
    (out_dir / "lora" / "lora_cut_64.pth").write_bytes(ok.read_bytes()[:-200])
    shutil.copy(ok, out_dir / "lora" / "lora_locked_64.pth")
    deny_reading(monkeypatch, out_dir / "lora" / "lora_locked_64.pth")
    return ["badcfg_64.pth", "badtok_64.pth", "garbage_64.pth", "notes_64.pth", "pretrain_64.pth",
            "lora/lora_cfg_64.pth", "lora/lora_cut_64.pth", "lora/lora_locked_64.pth", "lora/lora_weights_64.pth"]


def test_unreadable_files_are_skipped_with_a_note(monkeypatch, out_dir):
    bad = damage(out_dir, monkeypatch)
    at = app(monkeypatch, out_dir)
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="base").options == ["full_sft_64.pth (mode 1)"]
    assert at.sidebar.selectbox(key="adapter").options == ["(none)", "lora/lora_ok_64.pth"]
    note = next(c.value for c in at.sidebar.caption if c.value.startswith("skipped"))
    assert note.startswith(f"skipped {len(bad)} unreadable files: ")
    assert all(f"`{name}` (" in note for name in bad), note
    assert "lora_bad_64" not in note       # readable, only not for this base: left out without a note
    assert "no read permission" in note and "Traceback" not in page_text(at)
    # the good files still work, with and without the adapter
    at.sidebar.selectbox(key="adapter").set_value("(none)")
    at.sidebar.number_input(key="max_new_tokens").set_value(2)
    at.chat_input[0].set_value("hi").run()
    assert not at.exception and at.session_state.last_stats["new_tokens"] >= 1
    at.sidebar.selectbox(key="adapter").set_value("lora/lora_ok_64.pth").run()
    at.chat_input[0].set_value("hi").run()
    assert not at.exception and not at.error and len(at.session_state.messages) == 4


def test_only_unreadable_files_says_which_command(monkeypatch, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "full_sft_64.pth").write_text("not a checkpoint")
    at = app(monkeypatch, out)
    assert not at.exception
    assert any("python scripts/quickstart.py" in c.value for c in at.code)
    assert any(c.value.startswith("skipped 1 unreadable file: `full_sft_64.pth`") for c in at.sidebar.caption)


@pytest.mark.parametrize("error", [UserError, PermissionError])
def test_a_load_failure_is_one_line(monkeypatch, out_dir, capsys, error):
    line = f"{out_dir / 'full_sft_64.pth'}: cannot be loaded"

    def refuse(**kwargs):
        raise error(line)
    monkeypatch.setattr("inference.load.load_for_inference", refuse)
    at = app(monkeypatch, out_dir)
    assert not at.exception
    assert [e.value for e in at.error] == [line]
    assert at.sidebar.selectbox(key="base").options == ["full_sft_64.pth (mode 1)"]     # another can be chosen
    assert line in capsys.readouterr().err


def test_an_unexpected_failure_shows_no_details(monkeypatch, out_dir, capsys):
    def crash(*args, **kwargs):
        raise RuntimeError("internal detail 4242")
        yield
    at = app(monkeypatch, out_dir)
    monkeypatch.setattr("chat.engine.stream_generate", crash)
    at.chat_input[0].set_value("hi").run()
    assert not at.exception
    assert at.error[-1].value == GENERIC_ERROR
    assert "4242" not in page_text(at) and "Traceback" not in page_text(at)
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: internal detail 4242" in err


def test_chatbot_with_persona_documents_and_memory(monkeypatch, out_dir):
    """The sidebar's persona, documents and memory session reach the prompt through THE chat engine; the
    passages an answer was given are shown under it with their files."""
    docs = out_dir / "docs" / "mine"
    docs.mkdir(parents=True)
    (docs / "instruments.md").write_text("The oboe is a double-reed woodwind instrument.\n\n"
                                         "The cello is a bowed string instrument.\n", encoding="utf-8")
    at = app(monkeypatch, out_dir)
    at.sidebar.selectbox(key="adapter").set_value("(none)")
    at.sidebar.number_input(key="max_new_tokens").set_value(4)
    at.sidebar.slider(key="temperature").set_value(0.0)
    assert {"(none)", "dataset/knowledge/music", "out/docs/mine"} <= set(at.sidebar.selectbox(key="docs").options)
    at.sidebar.selectbox(key="persona").set_value("music_tutor").run()
    assert "Hi, I'm Melody" in page_text(at)                                      # the persona's greeting
    at.sidebar.selectbox(key="docs").set_value("out/docs/mine")
    at.sidebar.text_input(key="session").set_value("visitor").run()
    assert not at.exception and "1 passage from 1 file (indexed now)" in page_text(at)
    at.chat_input[0].set_value("What kind of instrument is the oboe?").run()
    assert not at.exception
    sources = at.session_state.messages[-1]["sources"]
    assert sources[0]["source"] == "instruments.md" and "double-reed" in sources[0]["text"]
    shown = [e for e in at.expander if e.label.startswith("Sources")]
    assert shown and "instruments.md" in " ".join(m.value for m in shown[-1].markdown)
    memory = out_dir / "memory" / "visitor.jsonl"
    assert json.loads(memory.read_text(encoding="utf-8"))["user"] == "What kind of instrument is the oboe?"
    # the reply is exactly what the engine gives for that persona and those passages
    from chat.engine import ChatEngine
    from chat.persona import load_persona
    from chat.retrieval import open_index
    from inference.generate import stream_generate
    from inference.load import load_for_inference
    m = load_for_inference(ckpt=out_dir / "full_sft_64.pth", out=out_dir)
    engine = ChatEngine(m, load_persona("music_tutor"), None, open_index(docs, out_dir), None, 3)
    turn = engine.prepare([], "What kind of instrument is the oboe?", 4)
    expected = "".join(stream_generate(m.model, m.tokenizer, turn.ids, 4, temperature=0.0))
    assert at.session_state.messages[-1]["content"] == expected


def test_the_checkpoint_menu_names_each_files_model_mode(monkeypatch, tmp_path):
    """MiniMind's --model_mode numbers in the menu: full_sft (mode 1), dpo (mode 2), its older rlhf_ name
    (mode 2); an import or a merge has none."""
    out = tmp_path / "out"
    for name in ("full_sft_64.pth", "dpo_64.pth", "rlhf_64.pth", "lora_music_merged_64.pth"):
        make_checkpoint(out / name)
    at = app(monkeypatch, out)
    assert not at.exception
    options = at.sidebar.selectbox(key="base").options
    for shown in ("full_sft_64.pth (mode 1)", "dpo_64.pth (mode 2)", "rlhf_64.pth (mode 2)", "lora_music_merged_64.pth"):
        assert shown in options, options
    assert at.sidebar.selectbox(key="base").value == "full_sft_64.pth"

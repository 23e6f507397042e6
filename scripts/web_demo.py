"""Chat with your trained TinyMind models in the browser.

    streamlit run scripts/web_demo.py
    TINYMIND_OUT_DIR=/path/to/out streamlit run scripts/web_demo.py     # another output folder

The sidebar lists the checkpoints in out/ and the LoRA adapters in out/lora/ that fit the chosen base
(same model config and tokenizer). The chosen files are loaded once and cached; replies stream from THE
sampling loop (model/generate.py) with the sidebar's settings. Only files inside out/ are ever opened.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root

import streamlit as st  # noqa: E402
import torch  # noqa: E402

from chat.history import trim_history  # noqa: E402
from model.adapter import adapter_fits, is_adapter  # noqa: E402
from model.checkpoint import file_sha256, read_pth  # noqa: E402
from model.errors import UserError  # noqa: E402
from model.generate import chat  # noqa: E402
from model.inference import load_for_inference  # noqa: E402
from model.paths import find_adapters, find_checkpoints, inside, out_dir  # noqa: E402

OUT_DIR = out_dir()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NO_ADAPTER = "(none)"


@st.cache_resource(max_entries=4, show_spinner="Loading model...")
def load_chat_model(base_path, base_mtime, adapter_path=None, adapter_mtime=None):
    """model.inference.Loaded for a base checkpoint plus an optional adapter (merged in); cached on the
    paths and modification times, so a retrained file is reloaded. The adapter must fit the base (the
    list offers only such adapters); another base file than its recorded one is allowed here (force) and
    noted in the sidebar."""
    if adapter_path:
        loaded = load_for_inference(adapter=adapter_path, base=base_path, force=True, device=DEVICE)
    else:
        loaded = load_for_inference(ckpt=base_path, device=DEVICE)
    loaded.info["sha256"] = file_sha256(base_path)
    return loaded


@st.cache_data(max_entries=64, show_spinner=False)
def adapter_header(path, mtime):
    """What decides whether an adapter fits a base: its model config, tokenizer hash and recorded base."""
    try:
        obj = read_pth(path)
    except UserError:
        return None
    if not is_adapter(obj):
        return None
    return {"config": obj.get("config", {}), "tokenizer_sha256": obj.get("tokenizer_sha256"),
            "base": (obj.get("base") or {}).get("path", ""), "base_sha256": (obj.get("base") or {}).get("sha256")}


def listed(paths):
    """Files (relative to OUT_DIR) that really lie inside it (a symlink out of it is not offered)."""
    names = []
    for p in paths:
        try:
            inside(OUT_DIR, p)
        except UserError:
            continue
        names.append(p.relative_to(OUT_DIR).as_posix())
    return names


def compatible_adapters(info):
    names = []
    for rel in listed(find_adapters(OUT_DIR)):
        path = inside(OUT_DIR, rel)
        head = adapter_header(str(path), path.stat().st_mtime)
        if head and not adapter_fits(head, info["config"], info["tokenizer_sha256"]):
            names.append(rel)
    return names


def clear_chat():
    st.session_state.messages = []
    st.session_state.last_stats = None


def show_empty_page():
    st.warning(f"No checkpoint in {OUT_DIR} yet. Train the whole pipeline (tokenizer, pretrain, SFT, LoRA) "
               "on this machine with:")
    st.code("python scripts/quickstart.py", language="bash")
    st.caption("or one stage at a time: python trainer/train_pretrain.py, then python trainer/train_full_sft.py")
    st.stop()


def sidebar_settings():
    sb = st.sidebar
    sb.subheader("Generation")
    return dict(
        temperature=sb.slider("Temperature (0 = greedy)", 0.0, 1.5, 0.7, 0.05, key="temperature"),
        top_p=sb.slider("Top-p", 0.05, 1.0, 0.85, 0.05, key="top_p"),
        top_k=sb.number_input("Top-k (0 = off)", 0, 1000, 0, key="top_k"),
        max_new_tokens=sb.number_input("Max new tokens", 1, 4096, 256, key="max_new_tokens"),
        repetition_penalty=sb.slider("Repetition penalty", 1.0, 2.0, 1.0, 0.05, key="repetition_penalty"),
    )


def choose_model(sb):
    """The sidebar's checkpoint and adapter choice -> the loaded model (model.inference.Loaded)."""
    checkpoints = listed(find_checkpoints(OUT_DIR))
    if not checkpoints:
        show_empty_page()
    sb.header("Model")
    default = next((i for i, n in enumerate(checkpoints) if n.startswith("full_sft")), 0)
    base_rel = sb.selectbox("Checkpoint (out/)", checkpoints, index=default, key="base")
    try:
        base_path = inside(OUT_DIR, base_rel)
        loaded = load_chat_model(str(base_path), base_path.stat().st_mtime)
        adapters = compatible_adapters(loaded.info)
        adapter_rel = sb.selectbox("LoRA adapter (out/lora/)", [NO_ADAPTER] + adapters, key="adapter")
        if adapter_rel != NO_ADAPTER:
            adapter_path = inside(OUT_DIR, adapter_rel)
            head = adapter_header(str(adapter_path), adapter_path.stat().st_mtime)
            if head["base_sha256"] != loaded.info["sha256"]:
                sb.caption(f"note: this adapter was trained on {Path(head['base']).name}, not on this file")
            loaded = load_chat_model(str(base_path), base_path.stat().st_mtime,
                                     str(adapter_path), adapter_path.stat().st_mtime)
    except UserError as e:
        st.error(str(e))
        st.stop()
    return loaded


def show_model_info(sb, info):
    with sb.expander("Model info"):
        st.write(f"**{info['parameters'] / 1e6:.2f}M parameters** · stage `{info['stage']}` · "
                 f"step {info['step']} · {DEVICE}")
        if info.get("adapter"):
            a = info["adapter"]
            st.write(f"adapter `{Path(a['path']).name}` (trained on `{Path(a['base'] or '?').name}`, "
                     f"step {a['step']})")
        st.json(info["config"], expanded=False)


def answer(loaded, prompt, history_turns, system, settings):
    """Show the user's prompt and stream the reply; both join the session's messages."""
    st.session_state.messages.append({"role": "user", "content": prompt})
    with st.chat_message("user"):
        st.markdown(prompt)
    history = trim_history(st.session_state.messages[:-1], history_turns)
    messages = history + [{"role": "user", "content": prompt}]
    stats = {}
    with st.chat_message("assistant"):
        pieces = chat(loaded.model, loaded.tokenizer, messages, system_prompt=system or None, stats=stats,
                      continuation=loaded.continuation, **settings)
        reply = st.write_stream(pieces)
        if not isinstance(reply, str):
            reply = "".join(str(x) for x in reply)
    st.session_state.messages.append({"role": "assistant", "content": reply})
    st.session_state.last_stats = stats


def main():
    st.set_page_config(page_title="TinyMind", page_icon="🤖")
    st.title("TinyMind chat")
    st.session_state.setdefault("messages", [])
    st.session_state.setdefault("last_stats", None)
    sb = st.sidebar
    loaded = choose_model(sb)
    settings = sidebar_settings()
    history_turns = sb.slider("History turns kept", 0, 10, 2, key="history_turns")
    system = sb.text_area("System prompt / persona", "", key="system",
                          placeholder="e.g. You are TinyMind, a friendly music expert.").strip()
    sb.button("Clear chat", on_click=clear_chat, key="clear")
    speed_slot = sb.empty()
    show_model_info(sb, loaded.info)
    if loaded.continuation:
        st.caption("A pretrained model continues your text (no chat template, no history).")
    for m in st.session_state.messages:
        with st.chat_message(m["role"]):
            st.markdown(m["content"])
    prompt = st.chat_input("Ask TinyMind something")
    if prompt:
        answer(loaded, prompt, history_turns, system, settings)
    stats = st.session_state.last_stats
    if stats:
        speed_slot.metric("Last reply", f"{stats['tokens_per_s']:.1f} tok/s",
                          f"{stats['new_tokens']} tokens in {stats['seconds']:.2f} s", delta_color="off")


main()

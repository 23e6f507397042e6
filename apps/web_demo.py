"""Chat with your trained TinyMind models in the browser.

    streamlit run scripts/web_demo.py                                   # from the repository root
    TINYMIND_OUT_DIR=/path/to/out streamlit run scripts/web_demo.py     # another output folder
    streamlit run scripts/web_demo.py --server.address 0.0.0.0          # open to the network, on purpose

The sidebar lists the checkpoints in out/ and the LoRA adapters in out/lora/ that fit the chosen base
(same model config and tokenizer); a file that does not load (damaged, foreign, unreadable) is left out
with a note. It starts on the newest adapter (by modification time) with the base it records, else on a
full SFT checkpoint without one; a choice made in the sidebar is kept. The chosen files are loaded once
and cached; replies stream from THE chat engine (chat/engine.py: the sidebar's persona, documents (at
first the knowledge base the model records, if any), memory session and history) and sampling loop
(inference/generate.py). Only files inside out/, the personas of personas/ and the documents folders
dataset/knowledge/* and out/docs/* (put your own there) are ever opened; each answer from documents shows
the passages it was given and their files (apps/web_chat.py).

The server's settings are .streamlit/config.toml, which Streamlit reads from the folder it starts in: this
machine only, no error details in the browser, no usage statistics, no file watcher. Started from another
folder without --server.address, Streamlit listens on every interface, so the page then refuses to serve.
A visitor sees one line for any failure; details go to the server's stderr.
"""
import os
import re
import sys
import traceback
import warnings
from pathlib import Path


import streamlit as st
import torch
from streamlit import config as st_config

from checkpoint.adapter import adapter_fits, config_diff
from checkpoint.pth import file_sha256
from core.errors import UserError
from inference.load import file_header as read_header, load_for_inference
from checkpoint.layout import find_adapter_base, find_adapters, find_checkpoints, inside, model_mode, out_dir
from inference.precision import PRECISIONS, precision_hint
from inference.sampling import CHAT_SAMPLING
from apps.web_chat import answer, chat_engine, show_sources, stamp

OUT_DIR = out_dir()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# the sidebar's precisions (inference/precision.py); float16 has no fast matmul on a CPU
DEMO_PRECISIONS = [p for p in PRECISIONS if DEVICE == "cuda" or p != "float16"]
NO_ADAPTER = "(none)"
GENERIC_ERROR = "Something went wrong on the server; the details are in its log."
# checking a file builds its network on the meta device, where loading weights copies nothing; torch says so
warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")


def log_error(what):
    """what, and the exception being handled with its traceback, to the server's stderr (never the page)."""
    print(f"web_demo: {what}", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)


@st.cache_resource(max_entries=4, show_spinner="Loading model...")
def load_chat_model(base_path, base_stamp, adapter_path=None, adapter_stamp=None, dtype="float32"):
    """inference.load.Loaded for a base checkpoint plus an optional adapter (merged in) at a precision
    (inference/precision.py); cached on the paths, stamps and precision, so a retrained file is reloaded. The
    adapter must fit the base (the list offers only such adapters); another base file than its recorded one
    is allowed here (force) and noted in the sidebar."""
    if adapter_path:
        loaded = load_for_inference(adapter=adapter_path, base=base_path, force=True, device=DEVICE, dtype=dtype)
    else:
        loaded = load_for_inference(ckpt=base_path, device=DEVICE, dtype=dtype)
    loaded.info["sha256"] = file_sha256(base_path)
    return loaded


def short_reason(err, path):
    """A UserError's line without its file and its advice, cut short: 'not a readable checkpoint'."""
    text = re.split(r" \(|; ", str(err).removeprefix(f"{path}: "), maxsplit=1)[0].strip()
    return (text[:67] + "...") if len(text) > 70 else (text or "not readable")


@st.cache_data(max_entries=256, show_spinner=False)
def file_header(path, version, adapter=False):
    """inference.load.file_header of a file of out/ (adapter=True: of out/lora/), or {"error": one short
    phrase} for a file that would not load. version: stamp(path), so a changed file is read again."""
    try:
        if not os.access(path, os.R_OK):
            return {"error": "no read permission"}
        return read_header(path, adapter)
    except UserError as e:
        print(f"web_demo: skipped {e}", file=sys.stderr)
        return {"error": short_reason(e, path)}
    except Exception:       # noqa: BLE001 - whatever a damaged file raises, it is not offered
        log_error(f"skipped {path}: damaged contents")
        return {"error": "damaged contents"}


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


def readable_files(paths, adapter=False):
    """({name relative to OUT_DIR: file_header plus "mtime_ns"} of the files that load, [(name, why)] of
    those that do not)."""
    good, bad = {}, []
    for rel in listed(paths):
        path = inside(OUT_DIR, rel)
        try:
            version = stamp(path)
            head = file_header(str(path), version, adapter)
        except OSError:         # gone since the listing
            continue
        if "error" in head:
            bad.append((rel, head["error"]))
        else:
            good[rel] = {**head, "mtime_ns": version[1]}
    return good, bad


def newest_first(files):
    """Names of readable_files' files, the most recently modified first."""
    return sorted(files, key=lambda rel: files[rel]["mtime_ns"], reverse=True)


def recorded_base(head):
    """The name in OUT_DIR of the base an adapter records (found as checkpoint.layout finds it), or None."""
    try:
        path = inside(OUT_DIR, find_adapter_base({"base": {"path": head["base"]}}, out=OUT_DIR))
    except UserError:
        return None
    return path.relative_to(OUT_DIR).as_posix()


def default_base(checkpoints, adapters):
    """Index in checkpoints of the base shown first: that of the newest adapter recorded on one of them
    with its model config, else the first full_sft checkpoint, else the first."""
    names = list(checkpoints)
    for rel in newest_first(adapters):
        base = recorded_base(adapters[rel])
        if base in checkpoints and not config_diff(adapters[rel]["config"], checkpoints[base]["config"]):
            return names.index(base)
    return next((i for i, n in enumerate(names) if n.startswith("full_sft")), 0)


def mode_label(rel):
    """A checkpoint as the menu shows it: its name, and the --model_mode that loads it (dpo_512.pth (mode 2))."""
    mode = model_mode(rel)
    return rel if mode is None else f"{rel} (mode {mode})"


def show_skipped(sb, skipped):
    if skipped:
        files = "; ".join(f"`{rel}` ({why})" for rel, why in skipped)
        sb.caption(f"skipped {len(skipped)} unreadable file{'s' * (len(skipped) > 1)}: {files}")


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
    """The sidebar's generation settings; they start at THE chat default (inference.sampling.CHAT_SAMPLING:
    greedy, the answers README.txt shows)."""
    sb, d = st.sidebar, CHAT_SAMPLING
    sb.subheader("Generation")
    return dict(
        temperature=sb.slider("Temperature (0 = greedy)", 0.0, 1.5, d["temperature"], 0.05, key="temperature"),
        top_p=sb.slider("Top-p (1 = off)", 0.05, 1.0, d["top_p"], 0.05, key="top_p"),
        top_k=sb.number_input("Top-k (0 = off)", 0, 1000, d["top_k"], key="top_k"),
        max_new_tokens=sb.number_input("Max new tokens", 1, 4096, 256, key="max_new_tokens"),
        repetition_penalty=sb.slider("Repetition penalty (1 = off)", 1.0, 2.0, d["repetition_penalty"], 0.05,
                                     key="repetition_penalty"),
    )


def load_or_stop(base_path, adapter_path=None, dtype="float32"):
    """load_chat_model, or why it cannot as one line on the page, which then stops (the sidebar's lists
    stay, to choose another file)."""
    try:
        if adapter_path is None:
            return load_chat_model(str(base_path), stamp(base_path), dtype=dtype)
        return load_chat_model(str(base_path), stamp(base_path), str(adapter_path), stamp(adapter_path), dtype)
    except (UserError, OSError) as e:
        print(f"web_demo: {e}", file=sys.stderr)
        st.error(str(e))
        st.stop()


def choose_model(sb):
    """The sidebar's checkpoint and adapter choice -> the loaded model (inference.load.Loaded)."""
    checkpoints, skipped = readable_files(find_checkpoints(OUT_DIR))
    adapters, bad = readable_files(find_adapters(OUT_DIR), adapter=True)
    skipped += bad
    if not checkpoints:
        show_skipped(sb, skipped)
        show_empty_page()
    sb.header("Model")
    show_skipped(sb, skipped)
    base_rel = sb.selectbox("Checkpoint (out/)", list(checkpoints), index=default_base(checkpoints, adapters),
                            key="base", format_func=mode_label)
    base_path = inside(OUT_DIR, base_rel)
    dtype = sb.selectbox("Precision", DEMO_PRECISIONS, key="dtype",
                         help="int8: weights quantised at load time, fastest decoding on a CPU; float32: exact")
    hint = precision_hint(dtype, DEVICE)
    if hint:
        sb.caption(hint.replace("--dtype ", ""))
    loaded = load_or_stop(base_path, dtype=dtype)
    info = loaded.info
    fitting = [rel for rel, head in adapters.items()
               if not adapter_fits(head, info["config"], info["tokenizer_sha256"])]
    # the newest fitting adapter until the visitor chooses (a keyed choice that is still listed is kept)
    newest = newest_first({rel: adapters[rel] for rel in fitting})
    adapter_rel = sb.selectbox("LoRA adapter (out/lora/)", [NO_ADAPTER] + fitting,
                               index=1 + fitting.index(newest[0]) if newest else 0, key="adapter")
    if adapter_rel != NO_ADAPTER:
        head = adapters[adapter_rel]
        if head["base_sha256"] != info["sha256"]:
            sb.caption(f"note: this adapter was trained on {Path(head['base']).name}, not on this file")
        loaded = load_or_stop(base_path, inside(OUT_DIR, adapter_rel), dtype)
    return loaded


def show_model_info(sb, info):
    with sb.expander("Model info"):
        st.write(f"**{info['parameters'] / 1e6:.2f}M parameters** · stage `{info['stage']}` · "
                 f"step {info['step']} · {DEVICE} · {info['dtype']}")
        if info.get("adapter"):
            a = info["adapter"]
            st.write(f"adapter `{Path(a['path']).name}` (trained on `{Path(a['base'] or '?').name}`, "
                     f"step {a['step']})")
        st.json(info["config"], expanded=False)


def refuse_if_exposed():
    """Stop when Streamlit listens on every network interface because nobody chose an address: it was
    started outside the repository root, so .streamlit/config.toml was not read, and without
    --server.address. Any address given (flag, environment, a config file) is a choice and is kept."""
    if st_config.is_manually_set("server.address"):
        return
    print("web_demo: refusing to serve: listening on every network interface (no server.address set)",
          file=sys.stderr)
    st.error("This demo is open to other machines: it was started outside the repository root, so "
             ".streamlit/config.toml (this machine only) was not read. Stop it and run "
             "`streamlit run scripts/web_demo.py` from the repository root, or add "
             "`--server.address 127.0.0.1` (`--server.address 0.0.0.0` opens it to the network on purpose).")
    st.stop()


def main():
    st.set_page_config(page_title="TinyMind", page_icon="🤖")
    st.title("TinyMind chat")
    refuse_if_exposed()
    st.session_state.setdefault("messages", [])
    st.session_state.setdefault("last_stats", None)
    sb = st.sidebar
    loaded = choose_model(sb)
    settings = sidebar_settings()
    engine = chat_engine(sb, loaded, OUT_DIR)
    sb.button("Clear chat", on_click=clear_chat, key="clear")
    speed_slot = sb.empty()
    show_model_info(sb, loaded.info)
    if loaded.continuation:
        st.caption("A pretrained model continues your text (no chat template, history, persona or documents).")
    if engine.persona and engine.persona.greeting and not st.session_state.messages:
        with st.chat_message("assistant"):
            st.markdown(engine.persona.greeting)
    for m in st.session_state.messages:
        with st.chat_message(m["role"]):
            st.markdown(m["content"])
            if m.get("sources"):
                show_sources(m["sources"])
    prompt = st.chat_input(f"Ask {engine.persona.name if engine.persona else 'TinyMind'} something")
    if prompt:
        answer(engine, prompt, settings)
    stats = st.session_state.last_stats
    if stats:
        speed_slot.metric("Last reply", f"{stats['tokens_per_s']:.1f} tok/s",
                          f"{stats['new_tokens']} tokens in {stats['seconds']:.2f} s", delta_color="off")


def run():
    """main(): a user's mistake as its one line, anything else as a generic line; the details (and the
    traceback) go to the server's stderr, never to the visitor."""
    try:
        main()
    except UserError as e:
        print(f"web_demo: {e}", file=sys.stderr)
        st.error(str(e))
    except Exception:       # noqa: BLE001 - st.stop() and st.rerun() are BaseExceptions and pass
        log_error("the page failed")
        st.error(GENERIC_ERROR)


if __name__ == "__main__":
    run()

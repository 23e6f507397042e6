"""The web demo's chatbot panel: the sidebar's persona, documents, memory session and history settings
become THE chat engine (chat/engine.py); an answer streams with the passages it was given shown under it.
The documents start on the knowledge base the model records (chat.retrieval.default_docs: the music bot's
dataset/knowledge/music) and follow the model chosen until the visitor picks others ("(none)": no retrieval).

Library module; the command is:
    streamlit run scripts/web_demo.py
"""
from pathlib import Path

import streamlit as st

from chat.engine import ChatEngine
from chat.memory import Memory
from chat.persona import load_persona, shipped_personas
from chat.retrieval import default_docs, document_files, open_index
from checkpoint.layout import repo_root, within

NONE = "(none)"
KNOWLEDGE = repo_root() / "dataset" / "knowledge"      # shipped knowledge bases; a visitor's own: out/docs/


def stamp(path):
    """What tells a new version of a file from the old one: size, modification and status-change times."""
    s = Path(path).stat()
    return s.st_size, s.st_mtime_ns, s.st_ctime_ns


def docs_folders(out):
    """{label: folder} of the documents the page offers: dataset/knowledge/* and out/docs/*."""
    found = {}
    for root, label in ((KNOWLEDGE, "dataset/knowledge"), (Path(out) / "docs", "out/docs")):
        if root.is_dir():       # a link that leads out of its root is not offered
            found.update({f"{label}/{d.name}": d for d in sorted(root.iterdir())
                          if d.is_dir() and within(root, d)})
    return found


@st.cache_resource(max_entries=8, show_spinner="Indexing the documents...")
def load_index(folder, version, out):
    """chat.retrieval.open_index of a folder (its index cached under out/index/); version: the files'
    stamps, so a changed file is indexed again."""
    return open_index(folder, out)


def recorded_choice(folders, loaded):
    """The documents choice a model starts on: the knowledge base it records (chat.retrieval.default_docs)
    when the page offers that folder, else NONE."""
    docs = default_docs(None, loaded.knowledge)
    if docs is None:
        return NONE
    return next((label for label, d in folders.items() if d.resolve() == Path(docs).resolve()), NONE)


def follow_model(choice):
    """Until the visitor picks documents of their own, the sidebar's choice is the model's: another model's
    recorded knowledge base (or none) replaces the previous one's; once the visitor has picked, their pick is
    kept (docs_auto: what the page set last; a value other than that is the visitor's)."""
    state = st.session_state
    if "docs" in state and state["docs"] != state.get("docs_auto"):
        state["docs_own"] = True
    if not state.get("docs_own"):
        state["docs"] = state["docs_auto"] = choice


def chat_engine(sb, loaded, out):
    """The sidebar's chatbot settings (persona, documents, memory session, history) -> chat.engine.ChatEngine."""
    sb.subheader("Chatbot")
    personas = shipped_personas()
    choice = sb.selectbox("Persona (personas/)", [NONE] + list(personas), key="persona",
                          help="a character from a YAML file: its name, manner and facts become the system prompt")
    persona = load_persona(personas[choice]) if choice != NONE else None
    system = sb.text_area("System prompt", "", key="system", placeholder="e.g. Answer briefly.").strip()
    folders = docs_folders(out)
    recorded = recorded_choice(folders, loaded)
    follow_model(recorded)
    docs = sb.selectbox("Answer from documents", [NONE] + list(folders), key="docs",
                        help="retrieval: the best passages of these files go into the prompt; their sources are "
                             "shown. It starts on the knowledge base the model was trained to answer from, if any; "
                             "(none) turns retrieval off")
    k = sb.slider("Passages per answer", 1, 10, 3, key="docs_k")
    index = None
    if docs != NONE:
        files = document_files(folders[docs])
        index = load_index(str(folders[docs]), tuple((rel, *stamp(p)) for rel, p in files.items()), str(out))
        sb.caption(f"{docs}: {index.describe()}" + (" (the model's knowledge base)" if docs == recorded else ""))
    session = sb.text_input("Memory session (out/memory/)", "", key="session",
                            placeholder="a name, e.g. alice: remembered across visits").strip()
    memory = Memory.open(session, out, what="Memory session") if session else None
    if memory is not None:
        n = len(memory.turns)
        sb.caption(f"remembers {n} exchange{'s' * (n != 1)} in out/memory/{memory.path.name}")
    cap = sb.slider("Earlier exchanges kept (at most; the window decides too)", 0, 20, 6, key="history_turns")
    return ChatEngine(loaded, persona, system or None, index, memory, k, history_cap=cap)


def show_sources(sources):
    """The passages an answer was given, with their files, under the answer."""
    with st.expander(f"Sources ({len(sources)} passage{'s' * (len(sources) != 1)})"):
        for i, p in enumerate(sources, 1):
            st.markdown(f"**[{i}] {p['source']}** · score {p['score']:.1f}")
            st.caption(p["text"])


def answer(engine, prompt, settings):
    """Show the user's prompt and stream the reply (through THE chat engine); both join the session's
    messages, the reply with the passages it was given."""
    history = [{"role": m["role"], "content": m["content"]} for m in st.session_state.messages]
    st.session_state.messages.append({"role": "user", "content": prompt})
    with st.chat_message("user"):
        st.markdown(prompt)
    stats = {}
    with st.chat_message("assistant"):
        turn, pieces = engine.reply(history, prompt, stats=stats, **settings)
        reply = st.write_stream(pieces)
        if not isinstance(reply, str):
            reply = "".join(str(x) for x in reply)
        sources = [{"source": p.source, "text": p.text, "score": p.score} for p in turn.passages]
        if sources:
            show_sources(sources)
        if turn.recalled:
            st.caption(f"remembered: {'; '.join(t['user'][:80] for t in turn.recalled)}")
        if turn.dropped:
            st.caption(f"{turn.dropped} earlier exchange{'s' * (turn.dropped > 1)} left out to fit the window")
    st.session_state.messages.append({"role": "assistant", "content": reply, "sources": sources})
    st.session_state.last_stats = stats

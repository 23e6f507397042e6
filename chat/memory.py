"""Long-term memory of a chat session: every finished exchange is kept in out/memory/{session}.jsonl
(across restarts), and the remembered exchanges most relevant to a new message (BM25, chat/retrieval.py)
come back into the prompt when they are no longer in the context window (chat/engine.py).

    from chat.memory import Memory
    memory = Memory.open("alice", out="out")          # --session alice
    memory.add("My cat is called Miso.", "What a lovely name!")
    memory.recall("What is my cat called?", k=2)      # -> [(index, {"user": ..., "assistant": ...})]
"""
import json
import time

from checkpoint import layout
from core.atomic import atomic_open
from core.errors import UserError
from core.ownership import owning
from chat.retrieval import BM25Index, tokenize

LOCK_WAIT_S = 30        # another writer holds the session for one file rewrite (milliseconds); past this: one line


class Memory:
    def __init__(self, path):
        self.path = path
        self.turns = read_turns(path) if path.exists() else []
        self._index = None

    @classmethod
    def open(cls, session, out=None, what="--session"):
        """The memory of a session (its name checked: what names it in the message)."""
        return cls(layout.memory_path(layout.out_dir(out), session, what))

    def add(self, user, assistant):
        """Keep one finished exchange. Safe with other writers (a second chat on the same --session, a
        second browser tab): under the session's lock (core/ownership.py; each waits its turn, a dead
        holder's lock is taken over) the file is read as it is now, the exchange appended, and the whole
        rewritten atomically (core.atomic), so no writer's exchange is lost and none is half-written."""
        with owning(self.path, "writing", wait=LOCK_WAIT_S, hint="use another --session"):
            self.turns = read_turns(self.path) if self.path.exists() else []
            self.turns.append({"user": user, "assistant": assistant, "time": round(time.time(), 3)})
            self._index = None
            with atomic_open(self.path) as f:
                for t in self.turns:
                    f.write(json.dumps(t, ensure_ascii=False) + "\n")

    def recall(self, message, k=2, exclude=()):
        """[(index, exchange)] of the k remembered exchanges most relevant to message (sharing words with
        it), best first, leaving out the indexes in exclude (those still in the window)."""
        if not self.turns or k <= 0:
            return []
        if self._index is None:
            self._index = BM25Index([tokenize(f"{t['user']} {t['assistant']}") for t in self.turns])
        exclude = set(exclude)
        hits = self._index.top(message, k + len(exclude))
        return [(i, self.turns[i]) for i, _ in hits if i not in exclude][:k]


def read_turns(path):
    """The exchanges of a memory file; a line that is not one is named (file and line)."""
    turns = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read this memory file ({e}); move it away to start the session afresh") \
            from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            t = json.loads(line)
        except json.JSONDecodeError:
            t = None
        if not (isinstance(t, dict) and isinstance(t.get("user"), str) and isinstance(t.get("assistant"), str)):
            raise UserError(f"{path}:{n}: not a remembered exchange ({{\"user\", \"assistant\"}}); fix the line "
                            "or move the file away to start the session afresh")
        turns.append(t)
    return turns

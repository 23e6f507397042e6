"""THE chat engine: eval_model.py, the web demo and the API server build every chat prompt here.

A reply's prompt is the system prompt (a persona's, chat/persona.py, or one given), the remembered
exchanges most relevant to the new message (chat/memory.py, when a session is on), as many of the newest
earlier exchanges as the context window holds (the oldest whole exchanges are dropped first; remembered
ones take at most a quarter of the room), and the new
message, with the top passages of the documents (chat/retrieval.py; the query is the message and the
user's message before it) and their sources before it. The
system prompt and the new message are always kept; inference/prompt.py makes the tokens (THE chat
template, each message encoded once) and fits them to the window.

    from chat.engine import ChatEngine
    engine = ChatEngine(loaded, persona=load_persona("music_tutor"), index=open_index("dataset/knowledge/music"))
    turn = engine.prepare(history, "Who was Bach?", max_new_tokens=256)
    for piece in engine.stream(turn, max_new_tokens=256):     # greedy, THE chat default (inference/sampling.py)
        print(piece, end="")
    engine.finish(turn, answer)          # into the session's memory, if any
    print(sources_line(turn.passages))
"""
from dataclasses import dataclass, field

from inference.generate import stream_generate
from inference.prompt import ChatEncoder, fit_chat, fit_text, newest_that_fit, prompt_budget

from chat.history import split_exchanges, trim_history
from chat.persona import persona_prompt
from chat.retrieval import CJK_RE

HEADERS = {"en": ("Use the passages below to answer the question.", "Question: "),
           "zh": ("请根据下面的资料回答问题。", "问题：")}


@dataclass
class Turn:
    """What one reply is built from."""
    message: str                # the user's message as typed
    ids: list                   # the prompt's token ids
    messages: list              # the conversation sent: remembered, kept history, the message with passages
    passages: list = field(default_factory=list)       # chat.retrieval.Passage, best first
    recalled: list = field(default_factory=list)       # remembered exchanges brought back [{"user", "assistant"}]
    dropped: int = 0            # earlier exchanges of the history left out to fit the window
    cut: int = 0                # tokens cut from the prompt's left (its system prompt and message alone overflow)
    answer: str = ""            # the reply, once reply()'s pieces are all read


def with_passages(message, passages):
    """The new message with the retrieved passages (numbered, with their sources) before it."""
    if not passages:
        return message
    head, ask = HEADERS["zh" if CJK_RE.search(message) else "en"]
    lines = [head] + [f"[{i}] ({p.source}) {p.text}" for i, p in enumerate(passages, 1)]
    return "\n".join(lines) + f"\n\n{ask}{message}"


def sources_line(passages):
    """The sources shown with an answer: 'sources: [1] composers.md (12.3), [2] ...'."""
    return "sources: " + ", ".join(f"[{i}] {p.source} ({p.score:.1f})" for i, p in enumerate(passages, 1))


class ChatEngine:
    def __init__(self, loaded, persona=None, system=None, index=None, memory=None, docs_k=3, memory_k=2,
                 history_cap=None):
        self.loaded, self.persona, self.index, self.memory = loaded, persona, index, memory
        self.docs_k, self.memory_k, self.history_cap = docs_k, memory_k, history_cap
        parts = [persona_prompt(persona) if persona else None, system or None]
        self.system = "\n".join(p for p in parts if p) or None       # None: the template's default system
        self.encoder = ChatEncoder(loaded.tokenizer)        # each message's tokens, encoded once

    @property
    def window(self):
        return self.loaded.model.config.max_position_embeddings

    def describe(self):
        parts = [f"persona {self.persona.name} ({self.persona.path})" if self.persona else None,
                 f"retrieval: {self.index.describe()}, top {self.docs_k}" if self.index else None,
                 f"memory: {self.memory.path} ({plural(len(self.memory.turns), 'exchange')})"
                 if self.memory is not None else None]
        return "; ".join(p for p in parts if p) or "plain chat"

    def system_of(self, messages):
        """The system prompt of a conversation: its own system message, else the engine's."""
        return next((m["content"] for m in messages if m["role"] == "system"), self.system)

    def prepare(self, history, message, max_new_tokens=256, budget=None):
        """The Turn for a new user message after history (a list of user/assistant messages; a system
        message in it, as an API request or a test record has one, replaces the engine's system prompt).
        budget: the most prompt tokens (default: the window less room for max_new_tokens, at most half).
        The prompt is fitted by inference.prompt, which encodes each message once."""
        if self.loaded.continuation:        # a pretrained model continues the text: nothing else goes in
            budget = prompt_budget(self.window, max_new_tokens)
            fitted = fit_text(self.loaded.tokenizer, message, budget, self.window)
            return Turn(message, fitted.ids, fitted.messages, cut=fitted.cut)
        enc, system = self.encoder, self.system_of(history)
        budget = budget or prompt_budget(self.window, max_new_tokens)
        # a follow-up ("what key is it in?") names its subject in the message before: both are the query
        exchanges = split_exchanges(trim_history(history, self.history_cap))
        before = next((m["content"] for ex in exchanges[-1:] for m in ex if m["role"] == "user"), "")
        passages = self.index.search(f"{message}\n{before}", self.docs_k) if self.index else []
        while True:                         # passages that do not fit go, the lowest ranked first
            user = {"role": "user", "content": with_passages(message, passages)}
            room = budget - len(enc.encode([user], system))
            if room >= 0 or not passages:
                break
            passages = passages[:-1]
        recalled = self.recall_that_fit(message, exchanges, room)
        fitted = fit_chat(enc, exchanges, user, budget, self.window, system,
                          before=[m for t in recalled for m in as_exchange(t)])
        messages = ([{"role": "system", "content": system}] if system else []) + fitted.messages
        return Turn(message, fitted.ids, messages, passages, recalled, fitted.dropped, fitted.cut)

    def recall_that_fit(self, message, exchanges, room):
        """The remembered exchanges to bring back: those not in the window, the most relevant first, in at
        most a quarter of the room (the newest history fills the rest)."""
        in_window = newest_that_fit([self.encoder.length(ex) for ex in exchanges], room)
        recalled, used = [], 0
        for t in self.recall(message, exchanges[len(exchanges) - in_window:]):
            n = self.encoder.length(as_exchange(t))
            if used + n <= room // 4:
                recalled.append(t)
                used += n
        return recalled

    def recall(self, message, in_window):
        """The remembered exchanges most relevant to message, those still in the window left out."""
        if self.memory is None:
            return []
        seen = {(ex[0]["content"], ex[-1]["content"]) for ex in in_window if len(ex) > 1}
        skip = [i for i, t in enumerate(self.memory.turns) if (t["user"], t["assistant"]) in seen]
        return [t for _, t in self.memory.recall(message, self.memory_k, exclude=skip)]

    def stream(self, turn, max_new_tokens=256, stats=None, **sampling):
        """Text pieces of the reply to a prepared Turn (THE sampling loop, inference/generate.py)."""
        return stream_generate(self.loaded.model, self.loaded.tokenizer, turn.ids, max_new_tokens,
                               stats=stats, **sampling)

    def finish(self, turn, answer):
        """A finished reply: kept in the session's memory (when one is on)."""
        if self.memory is not None and not self.loaded.continuation:
            self.memory.add(turn.message, answer)

    def reply(self, history, message, max_new_tokens=256, stats=None, **sampling):
        """prepare, stream and finish in one: (Turn, a generator of pieces that finishes the turn at its end)."""
        turn = self.prepare(history, message, max_new_tokens)

        def pieces():
            text = []
            for piece in self.stream(turn, max_new_tokens, stats, **sampling):
                text.append(piece)
                yield piece
            turn.answer = "".join(text)
            self.finish(turn, turn.answer)
        return turn, pieces()


def plural(n, word):
    return f"{n:,} {word}{'s' * (n != 1)}"


def as_exchange(turn):
    """A remembered exchange ({"user", "assistant"}) as the two messages it was."""
    return [{"role": "user", "content": turn["user"]}, {"role": "assistant", "content": turn["assistant"]}]

"""THE home of fitting a prompt into the model's context window: the budget rule (room kept for the reply),
a conversation's tokens in THE chat template with each message encoded once, the fitting (the system prompt
and the new message always kept, the oldest whole exchanges dropped first, a prompt still too long cut from
the left with a WindowWarning) and a report of what was left out. The chat engine (and through it the
terminal, the web demo and the evaluations), the server and every benchmark prompt (build_prompt) come here.

Library module, no command:
    from inference.prompt import ChatEncoder, fit_chat, prompt_budget
    encoder = ChatEncoder(tokenizer)          # keeps each message's tokens: a message is encoded once
    fitted = fit_chat(encoder, exchanges, {"role": "user", "content": "And then?"},
                      prompt_budget(2048, 256), window=2048, system_prompt="You are TinyMind.")
    fitted.ids, fitted.dropped, fitted.cut    # the prompt, exchanges left out, tokens cut from the left
"""
import warnings
from dataclasses import dataclass

from core.errors import UserError
from tokenizer.tokenizer import encode_chat

MAX_PIECES = 8192           # messages an encoder keeps the tokens of (a long-lived engine's cache stays small)


class WindowWarning(UserWarning):
    """A prompt or a reply length was cut to fit the model's context window."""


def prompt_budget(window, max_new_tokens, asked=False):
    """How many prompt tokens a window of `window` positions holds: room is kept for max_new_tokens of
    reply, at most half the window; asked=True (a client asked for exactly that many) keeps all of it."""
    return window - (max_new_tokens if asked else min(max(max_new_tokens, 1), window // 2))


@dataclass
class Fitted:
    """A prompt fitted to the window, and what was left out to fit."""
    ids: list                   # the prompt's token ids
    messages: list              # the messages it holds, the system prompt aside
    dropped: int = 0            # earlier exchanges left out, whole, the oldest first
    cut: int = 0                # tokens cut from the left (a WindowWarning said so)


class ChatEncoder:
    """A conversation's prompt in THE chat template (tokenizer.tokenizer.encode_chat) with each message
    encoded once. The template's parts are per message, so a prompt is the head (BOS, the template's start,
    the system prompt), each message's piece, and the opening of the reply; a piece is encode_chat of that
    message alone past the template's bare start, so the whole is encode_chat's, token for token."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.bare = encode_chat(tokenizer, [], system_prompt="")[0]                # BOS, the template's start
        self.opening = encode_chat(tokenizer, [], True, "")[0][len(self.bare):]   # where the reply starts
        self.bos = 1 if tokenizer.bos_id is not None else 0      # what stays of a head too long to keep
        self.pieces, self.heads = {}, {}

    def head(self, system_prompt=None):
        """BOS, the template's start and the system prompt (None: the template's default; "": none)."""
        if system_prompt not in self.heads:
            self.heads[system_prompt] = encode_chat(self.tokenizer, [], system_prompt=system_prompt)[0]
        return self.heads[system_prompt]

    def piece(self, message):
        """One message's tokens in the template; its text is encoded the first time only."""
        key = (message.get("role"), message.get("content"))
        key = key if all(isinstance(k, str) for k in key) else None          # None: encode_chat says what is wrong
        if key not in self.pieces:
            ids = encode_chat(self.tokenizer, [message], system_prompt="")[0]     # a bad message raises here
            if len(self.pieces) >= MAX_PIECES:
                self.pieces.clear()
            self.pieces[key] = ids[len(self.bare):]
        return self.pieces[key]

    def length(self, messages):
        """Tokens that messages add to a prompt."""
        return sum(len(self.piece(m)) for m in messages)

    def encode(self, messages, system_prompt=None):
        """encode_chat(tokenizer, messages, add_generation_prompt=True, system_prompt=system_prompt)'s ids:
        a conversation's own opening system message wins over system_prompt."""
        try:
            body = [t for m in messages for t in self.piece(m)]
        except UserError:
            encode_chat(self.tokenizer, messages, True, system_prompt)    # the error with the message's place
            raise
        return (self.bare if own_system(messages) else self.head(system_prompt)) + body + self.opening

    def head_length(self, messages, system_prompt=None):
        """How many of encode(messages, system_prompt)'s first tokens a cut keeps: BOS and the system prompt."""
        own = own_system(messages)
        return len(self.bare) + self.length(own) if own else len(self.head(system_prompt))


def own_system(messages):
    """A conversation's opening system message, as a list of zero or one."""
    return messages[:1] if messages and messages[0].get("role") == "system" else []


def cut_left(ids, head, budget, window, bos=0):
    """ids cut to budget tokens from the left, after their first `head` tokens (BOS and the system prompt;
    a head of half the budget or more is cut too, after its first `bos`), with a WindowWarning -> (ids,
    tokens cut). budget None: no limit."""
    if budget is None or len(ids) <= budget:
        return ids, 0
    head = head if head < budget // 2 else bos
    warnings.warn(f"prompt of {len(ids)} tokens cut to {budget} from the left (the model's window is "
                  f"{window} tokens, {window - budget} kept for the reply)", WindowWarning, stacklevel=3)
    return ids[:head] + ids[len(ids) - (budget - head):], len(ids) - budget


def newest_that_fit(lengths, room):
    """How many of the newest exchanges (their lengths, oldest first) fit in room tokens, whole."""
    kept, used = 0, 0
    for n in reversed(lengths):
        if used + n > room:
            break
        used, kept = used + n, kept + 1
    return kept


def fit_chat(encoder, exchanges, message, budget, window, system_prompt=None, before=()):
    """The prompt for `message` (the new one) after `exchanges` (the earlier history as whole exchanges,
    chat.history.split_exchanges) in budget tokens -> Fitted: the system prompt, the messages `before` (they
    open the conversation, e.g. remembered exchanges; the caller sized them), as many of the newest exchanges
    as fit (the oldest dropped first), the message. One still over budget (the system prompt and the message
    alone do not fit) is cut from the left (cut_left)."""
    room = budget - len(encoder.encode([message], system_prompt)) - encoder.length(before)
    kept = newest_that_fit([encoder.length(ex) for ex in exchanges], room)
    messages = list(before) + [m for ex in exchanges[len(exchanges) - kept:] for m in ex] + [message]
    ids = encoder.encode(messages, system_prompt)
    ids, cut = cut_left(ids, encoder.head_length(messages, system_prompt), budget, window, encoder.bos)
    return Fitted(ids, messages, len(exchanges) - kept, cut)


def fit_text(tokenizer, text, budget=None, window=None):
    """A pretrained model's prompt, which continues text: the text after the BOS token (for tokenizers that
    have one, as the chat template puts it too), no template; over budget, cut from the left after BOS."""
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    ids, cut = cut_left(bos + tokenizer.encode(text), len(bos), budget, window, len(bos))
    return Fitted(ids, [{"role": "user", "content": text}], 0, cut)


def build_prompt(tokenizer, messages, system_prompt=None, continuation=False, window=None, max_new_tokens=0):
    """THE prompt of a conversation as it is (benchmarks, evaluation, tests): THE chat template, ending where
    the assistant's reply starts. continuation=True is for a pretrained model: the last message's text
    (fit_text). With window (the model's max_position_embeddings), a prompt that leaves no room for
    max_new_tokens (at most half the window) is cut from the left, after the BOS token and the system
    prompt, with a WindowWarning: the oldest turns go first. A chat drops whole exchanges instead: fit_chat."""
    budget = prompt_budget(window, max_new_tokens) if window is not None else None
    if continuation:
        return fit_text(tokenizer, messages[-1]["content"], budget, window).ids
    encoder = ChatEncoder(tokenizer)
    ids = encoder.encode(messages, system_prompt)
    return cut_left(ids, encoder.head_length(messages, system_prompt), budget, window, encoder.bos)[0]

"""The chat history a model sees: whole exchanges, the newest kept first.

Library module, no command; used by the chat engine (chat/engine.py):
    from chat.history import split_exchanges, trim_history
"""


def split_exchanges(messages):
    """A history (system messages dropped: the caller passes the system prompt separately) -> its
    exchanges, each a list of messages that opens with a user message (an opening assistant message, a
    greeting, is an exchange of its own)."""
    exchanges = []
    for m in messages:
        if m["role"] == "system":
            continue
        if m["role"] == "user" or not exchanges:
            exchanges.append([])
        exchanges[-1].append(m)
    return exchanges


def trim_history(messages, turns):
    """The last `turns` user/assistant exchanges of a history (system messages dropped); None keeps all."""
    exchanges = split_exchanges(messages)
    if turns is not None:
        exchanges = exchanges[len(exchanges) - turns:] if turns > 0 else []
    return [m for ex in exchanges for m in ex]

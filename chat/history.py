"""The chat history a model sees: how many earlier exchanges are kept.

Library module, no command; used by the terminal chat and the web demo:
    from chat.history import trim_history
"""


def trim_history(messages, turns):
    """The last `turns` user/assistant exchanges of a history (system messages dropped: the caller
    passes the system prompt separately)."""
    msgs = [m for m in messages if m["role"] != "system"]
    if turns <= 0:
        return []
    # keep whole exchanges: count user messages from the end
    users, start = 0, len(msgs)
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i]["role"] == "user":
            users += 1
            if users > turns:
                break
            start = i
    return msgs[start:]

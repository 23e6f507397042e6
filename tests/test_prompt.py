"""Fitting a prompt into the window (inference/prompt.py): the same tokens as THE chat template when the
conversation fits, each message encoded once (in the chat engine and the server too), what was left out
reported (whole exchanges dropped, tokens cut with a WindowWarning)."""
from collections import Counter

import pytest

from chat.engine import ChatEngine
from chat.history import split_exchanges
from inference.load import Loaded
from inference.prompt import ChatEncoder, WindowWarning, build_prompt, fit_chat, prompt_budget
from tokenizer.tokenizer import ChatTemplate, SentencePieceTokenizer, encode_chat

from factories import default_tokenizer, make_model


def exchange(i, words=6):
    return [{"role": "user", "content": f"question {i} " + "about music " * words},
            {"role": "assistant", "content": f"answer {i} " + "a long reply " * words}]


def count_encodes(monkeypatch, tok):
    """Every text tok.encode is given from now on, counted."""
    calls, encode = Counter(), tok.encode

    def counting(text):
        calls[text] += 1
        return encode(text)
    monkeypatch.setattr(tok, "encode", counting)
    return calls


def with_bos():
    """A tokenizer with a BOS token and a template default system prompt (the shipped one has neither)."""
    tok = default_tokenizer()
    other = SentencePieceTokenizer(tok.model_bytes, ChatTemplate(default_system="Be kind."))
    other.bos_id = other.eos_id
    return other


@pytest.mark.parametrize("make_tok", [default_tokenizer, with_bos])
def test_the_prompt_is_the_chat_templates_tokens_when_it_fits(make_tok):
    tok = make_tok()
    history = [m for i in range(3) for m in exchange(i)]
    new = {"role": "user", "content": "And the newest question?"}
    cases = [(history + [new], "You are TinyMind."), (history + [new], None), (history + [new], ""),
             ([{"role": "system", "content": "Own."}] + history + [new], "ignored"),
             ([{"role": "system", "content": ""}] + history + [new], "ignored"),
             (history[:2] + [{"role": "system", "content": "Later."}] + history[2:], None)]
    encoder = ChatEncoder(tok)
    for messages, system in cases:
        want = encode_chat(tok, messages, add_generation_prompt=True, system_prompt=system)[0]
        assert encoder.encode(messages, system) == want
        assert build_prompt(tok, messages, system, window=4096, max_new_tokens=64) == want
    fitted = fit_chat(encoder, split_exchanges(history), new, prompt_budget(4096, 64), 4096, "Be brief.")
    assert fitted.ids == encode_chat(tok, history + [new], True, "Be brief.")[0]
    assert (fitted.dropped, fitted.cut, fitted.messages) == (0, 0, history + [new])


def test_the_chat_engine_encodes_each_message_once(monkeypatch):
    tok = default_tokenizer()
    loaded = Loaded(make_model(max_position_embeddings=512), tok, {"stage": "full_sft"}, "tiny")
    history = [m for i in range(12) for m in exchange(i)]

    class Remembers:                # a memory holding every exchange of the history
        turns = [{"user": history[i]["content"], "assistant": history[i + 1]["content"]}
                 for i in range(0, len(history), 2)]

        def recall(self, message, k, exclude=()):
            return [(i, t) for i, t in enumerate(self.turns) if i not in set(exclude)][:k]

    engine = ChatEngine(loaded, system="You are TinyMind.", memory=Remembers(), memory_k=2)
    calls = count_encodes(monkeypatch, tok)
    turn = engine.prepare(history, "question 0 again about music?", max_new_tokens=64)
    assert 0 < turn.dropped < 12 and turn.recalled             # exchanges dropped, measured and remembered
    texts = [m["content"] for m in history] + ["question 0 again about music?", "You are TinyMind."]
    assert {t: calls[t] for t in texts} == {t: 1 for t in texts}
    # the prompt is still THE template's over what was sent, token for token
    assert turn.ids == encode_chat(tok, turn.messages, add_generation_prompt=True)[0]


def test_the_server_encodes_the_last_message_once(monkeypatch):
    pytest.importorskip("fastapi")
    from serving.api import prompt_of
    tok = default_tokenizer()
    loaded = Loaded(make_model(max_position_embeddings=512), tok, {"stage": "full_sft"}, "tiny")
    messages = [m for i in range(12) for m in exchange(i)] + [{"role": "user", "content": "What is an oboe?"}]
    calls = count_encodes(monkeypatch, tok)
    ids, _ = prompt_of(loaded, messages, 64, 2048)
    assert all(calls[m["content"]] == 1 for m in messages)
    encoder = ChatEncoder(tok)
    tail = encoder.piece(messages[-1]) + encoder.opening            # the last message whole, at the end
    assert len(ids) <= 512 - 64 and ids[-len(tail):] == tail


def test_whole_oldest_exchanges_are_dropped_and_counted():
    tok = default_tokenizer()
    encoder = ChatEncoder(tok)
    exchanges = [exchange(i) for i in range(10)]
    new = {"role": "user", "content": "next?"}
    one = encoder.length(exchanges[0])
    assert all(encoder.length(ex) == one for ex in exchanges)         # equal lengths: the count is exact
    base = len(encoder.encode([new], "Be brief."))
    for budget, kept in ((base + 3 * one, 3), (base + 3 * one - 1, 2)):     # exactly three; one token short
        fitted = fit_chat(encoder, exchanges, new, budget, 4096, "Be brief.")
        assert fitted.dropped == 10 - kept and fitted.cut == 0
        assert fitted.messages == [m for ex in exchanges[10 - kept:] for m in ex] + [new]
        assert fitted.ids == encode_chat(tok, fitted.messages, True, "Be brief.")[0] and len(fitted.ids) <= budget


def test_a_prompt_too_long_is_cut_from_the_left_and_the_cut_reported():
    tok = default_tokenizer()
    encoder = ChatEncoder(tok)
    new = {"role": "user", "content": "tell me " * 100}
    full = encode_chat(tok, [new], True, "You are TinyMind.")[0]
    head = encode_chat(tok, [], system_prompt="You are TinyMind.")[0]
    budget = prompt_budget(128, 32)
    with pytest.warns(WindowWarning, match=f"prompt of {len(full)} tokens cut to {budget} from the left"):
        fitted = fit_chat(encoder, [exchange(0)], new, budget, 128, "You are TinyMind.")
    assert fitted.dropped == 1 and fitted.cut == len(full) - budget
    assert fitted.ids == head + full[len(full) - (budget - len(head)):]
    # the chat engine says so in its Turn
    engine = ChatEngine(Loaded(make_model(max_position_embeddings=128), tok, {"stage": "full_sft"}, "tiny"),
                        system="You are TinyMind.")
    with pytest.warns(WindowWarning):
        turn = engine.prepare(exchange(0), new["content"], max_new_tokens=32)
    assert (turn.ids, turn.dropped, turn.cut) == (fitted.ids, 1, fitted.cut)


def test_the_terminal_says_what_was_left_out(capsys):
    from apps.terminal import show
    from chat.engine import Turn
    turn = Turn("hi", [1], [], dropped=3)
    assert show(iter(["hel", "lo"]), turn) == "hello"
    assert "(3 earlier exchanges left out to fit the window)" in capsys.readouterr().out

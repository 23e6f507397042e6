"""Tokenizer round-trip, special tokens, THE chat template's loss mask, and training's one-line errors."""
import json

import pytest

from core.errors import UserError
from tokenizer.tokenizer import MIN_VOCAB_SIZE, ChatTemplate, SentencePieceTokenizer, encode_chat, train_tokenizer

MIXED = ("Hello, world!  Tabs\tand\nnew lines 你好，世界！今天天气很好。😀🎵🇨🇳 café naïve "
         "x\u2581y  多个   空格 <|im_end|> 1234567 ∑∫ \u00a0end ")


def test_round_trip_mixed_text(tokenizer):
    for text in [MIXED, "", " ", "\n\n", "🎸" * 5, "日本語とEnglish"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_text_never_becomes_a_special_token(tokenizer):
    ids = tokenizer.encode("<|im_start|>user\n<|im_end|><|endoftext|>")
    assert not set(ids) & set(tokenizer.special_tokens.values())
    assert tokenizer.encode_special("<|im_start|>") == [tokenizer.special_tokens["<|im_start|>"]]


def test_trained_tokenizer_round_trips_and_is_deterministic(tmp_path):
    texts = ["the quick brown fox jumps over the lazy dog " * 3, "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
             "music: 钢琴 piano, 吉他 guitar, violin 小提琴"] * 30
    a = train_tokenizer(texts, vocab_size=400, out_path=tmp_path / "a.model")
    b = train_tokenizer(texts, vocab_size=400, out_path=tmp_path / "b.model")
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
    assert b.sha256 == a.sha256
    assert a.vocab_size == 400
    assert a.decode(a.encode(MIXED)) == MIXED               # unseen characters go through byte fallback
    assert a.special_tokens["<|im_end|>"] == 4 and a.pad_id == 1 and a.eos_id == 2


def test_chat_mask_covers_exactly_assistant_replies(tokenizer):
    msgs = [{"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "Hi! 我是 TinyMind。"},
            {"role": "user", "content": "And?"},
            {"role": "assistant", "content": "Bye."}]
    ids, mask = encode_chat(tokenizer, msgs)
    assert len(ids) == len(mask)
    im_end = tokenizer.special_tokens["<|im_end|>"]
    # the tokens under the mask are the two replies, each followed by its <|im_end|>
    spans, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    assert len(spans) == 2
    for span, reply in zip(spans, ["Hi! 我是 TinyMind。", "Bye."]):
        assert span[-1] == im_end
        assert tokenizer.decode(span[:-1]) == reply
    # the rendered text is ChatML
    text = "".join(tokenizer.decode([i]) if i not in tokenizer.special_tokens.values()
                   else {v: k for k, v in tokenizer.special_tokens.items()}[i] for i in ids)
    assert text.startswith("<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_start|>assistant\nBye.<|im_end|>\n")


def test_generation_prompt_and_system_prompt(tokenizer):
    ids, mask = encode_chat(tokenizer, [{"role": "user", "content": "hi"}], add_generation_prompt=True,
                            system_prompt="Be brief.")
    assert sum(mask) == 0
    tail = tokenizer.encode_special("<|im_start|>assistant\n")
    assert ids[-len(tail):] == tail
    assert ids[:len(tokenizer.encode_special("<|im_start|>system\nBe brief."))] == \
        tokenizer.encode_special("<|im_start|>system\nBe brief.")


def test_unknown_role_is_a_user_error(tokenizer):
    with pytest.raises(UserError, match="unknown role"):
        encode_chat(tokenizer, [{"role": "bot", "content": "x"}])


def test_other_template_plugs_in(tokenizer):
    zephyr = ChatTemplate(name="zephyr", role_prefix="<|{role}|>\n", end="<|endoftext|>", sep="\n")
    tok = SentencePieceTokenizer(tokenizer.model_bytes, zephyr)
    ids, mask = encode_chat(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "b"
    assert ids[[k for k, m in enumerate(mask) if m][-1]] == tok.eos_id
    assert tok.sha256 != tokenizer.sha256


TEXTS = ["the quick brown fox jumps over the lazy dog", "music: piano, guitar, violin"] * 20


@pytest.mark.parametrize("vocab_size", [0, -1, 10, 261, 2**31, True, 6400.5])
def test_vocab_size_out_of_range_is_refused_before_reading(tmp_path, vocab_size):
    def never():
        raise AssertionError("the corpus was read")
        yield
    with pytest.raises(UserError) as e:
        train_tokenizer(never(), vocab_size=vocab_size, out_path=tmp_path / "t.model")
    assert str(e.value).startswith("--vocab_size ") and "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())


def test_smallest_vocab_size_is_the_real_minimum(tmp_path):
    # 256 byte pieces + 5 special tokens + one per distinct character: one character gives exactly MIN_VOCAB_SIZE
    tok = train_tokenizer(["aaaa"] * 10, vocab_size=MIN_VOCAB_SIZE, out_path=tmp_path / "t.model")
    assert tok.vocab_size == MIN_VOCAB_SIZE == 262


def test_vocab_size_the_corpus_cannot_give(tmp_path):
    with pytest.raises(UserError) as e:
        train_tokenizer(TEXTS, vocab_size=100_000, out_path=tmp_path / "t.model")
    largest = int(str(e.value).split("allows at most ")[1].split()[0])
    assert "too large for this corpus" in str(e.value) and f"--vocab_size {largest} or less" in str(e.value)
    assert train_tokenizer(TEXTS, vocab_size=largest, out_path=tmp_path / "t.model").vocab_size == largest
    with pytest.raises(UserError, match="too large"):
        train_tokenizer(TEXTS, vocab_size=largest + 1, out_path=tmp_path / "u.model")
    many_chars = ["".join(chr(0x4E00 + 7 * i + j) for j in range(7)) for i in range(40)]   # 280 characters
    with pytest.raises(UserError, match=r"too small for this corpus, which needs at least 541 pieces"):
        train_tokenizer(many_chars, vocab_size=300, out_path=tmp_path / "v.model")
    assert [p.name for p in tmp_path.iterdir()] == ["t.model"]


def test_error_raised_by_the_corpus_arrives_unwrapped(tmp_path):
    def texts():
        yield "some text"
        raise UserError("data.jsonl:2: malformed JSON; fix it")
    with pytest.raises(UserError) as e:
        train_tokenizer(texts(), vocab_size=300, out_path=tmp_path / "t.model")
    assert str(e.value) == "data.jsonl:2: malformed JSON; fix it"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("vocab_size,fragment", [("10", "--vocab_size 10: too small"),
                                                 ("100000", "--vocab_size 100000: too large for this corpus"),
                                                 ("300", ":3: malformed JSON")])
def test_train_tokenizer_cli_one_line(tmp_path, vocab_size, fragment):
    from factories import REPO, run_python
    data = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": t}) for t in TEXTS[:2]] + (["{broken"] if vocab_size == "300" else [])
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = run_python(["trainer/train_tokenizer.py", "--data_path", str(data), "--vocab_size", vocab_size,
                    "--out_dir", str(tmp_path / "tok")], REPO, check=False)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert fragment in r.stderr and not (tmp_path / "tok" / "tokenizer.model").exists()

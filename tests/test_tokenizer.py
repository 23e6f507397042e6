"""Tokenizer round-trip, special tokens, and THE chat template's loss mask."""
import pytest

from model.errors import UserError
from model.tokenizer import ChatTemplate, SentencePieceTokenizer, encode_chat, train_tokenizer

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

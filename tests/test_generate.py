"""THE sampling loop: greedy determinism, KV cache == recompute, batching, repetition penalty, stop tokens,
streaming, chat.

    python -m pytest tests/test_generate.py -q
"""
import pytest
import torch

from factories import make_model
from inference.generate import StreamDecoder, chat, generate, stream_generate
from inference.sampling import sample_next
from tokenizer.tokenizer import encode_chat


def peaky_model(vocab, seed=0):
    """A random model with large logits, so greedy decoding wanders instead of repeating one token."""
    return make_model(vocab, seed, std=0.3, tie_word_embeddings=False)


def greedy_without_cache(model, prompt, n, repetition_penalty=1.0):
    """Greedy decoding by full recompute, no KV cache. The penalty as CTRL (Keskar et al. 2019, sec. 4.1)
    defines it: the logit of every token already in the sequence, prompt included, is divided by the
    penalty when positive and multiplied by it when negative."""
    ids, out = list(prompt), []
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        seen = torch.tensor(sorted(set(ids)))
        logits[seen] = torch.where(logits[seen] > 0, logits[seen] / repetition_penalty,
                                   logits[seen] * repetition_penalty)
        t = int(logits.argmax())
        out.append(t)
        ids.append(t)
    return out


def test_greedy_is_deterministic_and_equals_no_cache():
    model = peaky_model(300)
    prompt = [5, 17, 42, 7]
    a = generate(model, [prompt], max_new_tokens=20)[0]
    b = generate(model, [prompt], max_new_tokens=20)[0]
    assert a == b == greedy_without_cache(model, prompt, 20)
    assert len(set(a)) > 3


def test_batch_with_left_padding_equals_one_by_one():
    model = peaky_model(300)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16]]
    batched = generate(model, prompts, max_new_tokens=12)
    for p, out in zip(prompts, batched):
        assert out == generate(model, [p], max_new_tokens=12)[0]


def test_sampling_is_seedable_and_top_k_1_is_greedy():
    model = peaky_model(300)
    kw = dict(max_new_tokens=15, temperature=1.0, top_p=0.9, top_k=50, repetition_penalty=1.3)
    assert generate(model, [[1, 2, 3]], seed=7, **kw) == generate(model, [[1, 2, 3]], seed=7, **kw)
    assert generate(model, [[1, 2, 3]], seed=7, **kw) != generate(model, [[1, 2, 3]], seed=8, **kw)
    greedy = generate(model, [[1, 2, 3]], max_new_tokens=15)
    assert generate(model, [[1, 2, 3]], max_new_tokens=15, temperature=1.0, top_k=1, seed=3) == greedy


def test_repetition_penalty_reduces_repeats():
    """A model whose greedy output repeats tokens: the penalty must change the output, to the one the CTRL
    rule gives step by step, with strictly fewer repeats. And the rule on both signs of a seen logit."""
    model = peaky_model(300, seed=3)
    plain = generate(model, [[1, 2, 3]], max_new_tokens=40)[0]
    penalised = generate(model, [[1, 2, 3]], max_new_tokens=40, repetition_penalty=2.0)[0]
    assert len(set(plain)) < len(plain)                                   # a case that repeats
    assert penalised == greedy_without_cache(model, [1, 2, 3], 40, repetition_penalty=2.0)
    assert len(set(penalised)) > len(set(plain))
    seen = torch.tensor([[True, False]])
    for logits in ([3.0, 2.0], [-1.0, -1.5]):                   # 3 / 2 < 2 and -1 * 2 < -1.5: token 1 wins
        assert sample_next(torch.tensor([logits]), seen=seen).item() == 0
        assert sample_next(torch.tensor([logits]), repetition_penalty=2.0, seen=seen).item() == 1


def test_stops_at_im_end(tokenizer):
    model = peaky_model(tokenizer.vocab_size)
    im_end = tokenizer.special_tokens["<|im_end|>"]
    prompt = tokenizer.encode("hello there")
    free = generate(model, [prompt], max_new_tokens=10)[0]
    # make <|im_end|> the argmax at step 3: give it a scaled copy of that step's winner's output row
    with torch.no_grad():
        model.lm_head.weight[im_end] = model.lm_head.weight[free[3]] * 3
    free = generate(model, [prompt], max_new_tokens=10)[0]
    assert im_end in free
    stopped = generate(model, [prompt], max_new_tokens=10, stop_ids=tokenizer.stop_ids)[0]
    assert stopped == free[:free.index(im_end)]
    text = "".join(stream_generate(model, tokenizer, prompt, max_new_tokens=10))
    assert text == tokenizer.decode(stopped)


def test_stream_never_splits_a_character(tokenizer):
    text = "音乐🎵 Bach 巴赫 😀 ok"
    ids = tokenizer.encode(text)
    assert len(ids) > len(text) // 2                         # byte-fallback tokens are in play
    decoder = StreamDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_chat_streams_and_reports_speed(tokenizer):
    """chat() streams, in pieces, what generate() makes of the chat-template prompt, decoded by the tokenizer;
    its stats count the prompt and the new tokens, and the speed is their ratio to the time taken."""
    model = peaky_model(tokenizer.vocab_size)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi 音乐"}]
    stats = {}
    pieces = list(chat(model, tokenizer, messages, max_new_tokens=12, stats=stats))
    prompt, _ = encode_chat(tokenizer, messages, add_generation_prompt=True)
    new = generate(model, [prompt], max_new_tokens=12, stop_ids=tokenizer.stop_ids)[0]
    assert len(new) > 1 and len(pieces) > 1 and all(pieces)             # a reply, streamed in pieces
    assert "".join(pieces) == tokenizer.decode(new)
    assert stats["prompt_tokens"] == len(prompt) and stats["new_tokens"] == len(new)
    assert stats["seconds"] > 0
    assert stats["tokens_per_s"] == pytest.approx(len(new) / stats["seconds"])

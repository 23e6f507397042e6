"""THE sampling loop: greedy determinism, KV cache == recompute, batching, stop tokens, streaming."""
import torch

from model.config import ModelConfig
from model.generate import StreamDecoder, chat, generate, stream_generate
from model.model import TinyMindForCausalLM


def peaky_model(vocab, seed=0):
    """A random model with large logits, so greedy decoding wanders instead of repeating one token."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=False)
    model = TinyMindForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


def greedy_without_cache(model, prompt, n):
    ids, out = list(prompt), []
    for _ in range(n):
        with torch.no_grad():
            t = int(model(torch.tensor([ids])).logits[0, -1].argmax())
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
    model = peaky_model(300, seed=3)
    plain = generate(model, [[1, 2, 3]], max_new_tokens=40)[0]
    penalised = generate(model, [[1, 2, 3]], max_new_tokens=40, repetition_penalty=2.0)[0]
    assert len(set(penalised)) >= len(set(plain))


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
    model = peaky_model(tokenizer.vocab_size)
    stats = {}
    pieces = list(chat(model, tokenizer, [{"role": "user", "content": "hi"}], max_new_tokens=8, stats=stats))
    assert stats["new_tokens"] <= 8 and stats["tokens_per_s"] > 0
    assert "".join(pieces) == "".join(chat(model, tokenizer, [{"role": "user", "content": "hi"}],
                                            max_new_tokens=8))

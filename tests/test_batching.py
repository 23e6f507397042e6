"""The decoding batch (inference/batching.py): rows that join between steps (shorter and longer than the batch,
alone and in groups), leave at different steps, and outlive the cache's window compute what each would
alone: every step's logits equal a solo forward of the row's own tokens, its tokens equal solo generate's,
a seeded sampled row does not depend on its batchmates, and generate_steps is a batch joined at once.

    pytest tests/test_batching.py
"""
import pytest
import torch

from factories import make_model, train_memorizer
from inference.batching import Batch
from inference.generate import generate

PROMPT = [5, 100, 200, 300, 400, 500, 600, 700]


def solo_logits(model, seq):
    with torch.no_grad():
        return model(torch.tensor([seq])).logits[0, -1].float()


def check_rows(model, batch, prompts):
    """Every live row's next-token logits equal a forward of its prompt and tokens so far, alone."""
    for i, r in enumerate(batch.rows):
        want = solo_logits(model, prompts[r.id] + r.new)
        assert torch.allclose(batch.logits[i], want, atol=2e-4, rtol=1e-4), (r.id, (batch.logits[i] - want).abs().max())


def run(model, batch, prompts, plan, steps):
    """plan: {step: [(prompt index, max_new_tokens), ...]} rows joining (as one group) before that step
    -> {prompt index: its row}."""
    joined = {}
    for s in range(steps):
        if s in plan:
            group = plan[s]
            rows = batch.join([prompts[i] for i, _ in group], max_new_tokens=max(n for _, n in group))
            for r, (i, n) in zip(rows, group):
                assert r.id == i
                r.left, joined[i] = n, r
        check_rows(model, batch, prompts)
        batch.step()
    return joined


def test_rows_joining_and_leaving_compute_what_each_would_alone():
    model = make_model(std=0.1)
    g = torch.Generator().manual_seed(3)
    lengths = [5, 14, 3, 7, 9]                  # 14 joins when the batch holds 5 + 3: the others move right
    prompts = [torch.randint(5, 6000, (n,), generator=g).tolist() for n in lengths]
    batch = Batch(model, grow=8)                # a small growth step: the cache grows several times
    rows = run(model, batch, prompts, {0: [(0, 20)], 3: [(1, 6)], 5: [(2, 12), (3, 4)], 9: [(4, 10)]}, 24)
    assert not batch.rows                       # every row left after its own number of tokens
    for i, n in {0: 20, 1: 6, 2: 12, 3: 4, 4: 10}.items():
        assert rows[i].new == generate(model, [prompts[i]], max_new_tokens=n)[0], i


def test_tokens_equal_solo_generation_on_a_trained_model():
    model, continuation = train_memorizer(PROMPT)
    batch = Batch(model)
    a = batch.join([PROMPT], max_new_tokens=30)[0]
    for _ in range(6):
        batch.step()
    b, c = batch.join([PROMPT + continuation[:3], PROMPT[:1] + PROMPT[1:]], max_new_tokens=12)
    while batch.rows:
        batch.step()
    assert a.new == continuation[:30]
    assert b.new == continuation[3:15] and c.new == continuation[:12]


def test_the_window_is_outlived_by_moving_the_cache_left():
    model = make_model(std=0.1, max_position_embeddings=48)
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(5, 6000, (n,), generator=g).tolist() for n in (10, 6, 12, 8)]
    batch = Batch(model, grow=16)
    # rows keep arriving: the batch's length passes 48 long before any row's own tokens do
    rows = run(model, batch, prompts, {0: [(0, 20)], 15: [(1, 30)], 30: [(2, 25)], 50: [(3, 20)]}, 75)
    assert not batch.rows and batch.cache.max_len <= 48 and rows[3].new == generate(model, [prompts[3]], 20)[0]


def test_a_seeded_sampled_row_does_not_depend_on_its_batchmates():
    model = make_model(std=0.1)
    prompt = list(range(50, 60))
    alone = Batch(model)
    r = alone.join([prompt], max_new_tokens=16, temperature=0.9, top_p=0.9, seed=7)[0]
    while alone.rows:
        alone.step()
    crowd = Batch(model)
    crowd.join([list(range(300, 320))], max_new_tokens=20, temperature=1.0, seed=1)
    crowd.step()
    s = crowd.join([prompt], max_new_tokens=16, temperature=0.9, top_p=0.9, seed=7)[0]
    crowd.join([list(range(900, 904))], max_new_tokens=5, repetition_penalty=1.3)
    while crowd.rows:
        crowd.step()
    assert s.new == r.new and len(r.new) == 16


def test_a_prompt_that_fills_the_window_is_refused():
    model = make_model(max_position_embeddings=16)
    with pytest.raises(ValueError, match="leaves no room"):
        Batch(model).join([list(range(5, 21))])


def test_top_p_zero_is_greedy_and_no_new_tokens_is_none():
    from inference.generate import generate_steps
    from inference.sampling import sample_next
    logits = torch.tensor([[0.1, 3.0, 2.9, -1.0]])
    assert all(int(sample_next(logits, 1.0, top_p=0.0, generator=torch.Generator().manual_seed(s))) == 1
               for s in range(20))
    assert list(generate_steps(make_model(), [[5, 6]], max_new_tokens=0)) == []

"""The network: parity with transformers' Llama, causality, -100 labels, GQA/MoE shapes, KV cache."""
import pytest
import torch

from model.config import ModelConfig, get_preset
from model.model import KVCache, TinyMindForCausalLM


def random_model(**overrides):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, intermediate_size=96, rope_theta=10000.0), **overrides})
    return TinyMindForCausalLM(cfg).eval()


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_logits_equal_transformers(tie, bias):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    # q/k/v biases are Qwen2's layout (Llama's attention_bias also puts one on o_proj)
    cfg_cls, model_cls = ((transformers.Qwen2Config, transformers.Qwen2ForCausalLM) if bias
                          else (transformers.LlamaConfig, transformers.LlamaForCausalLM))
    hf_cfg = cfg_cls(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=tie,
        max_position_embeddings=256)
    hf = model_cls(hf_cfg).eval()
    ours = TinyMindForCausalLM(ModelConfig(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=tie, attention_bias=bias)).eval()
    assert set(ours.state_dict()) == set(hf.state_dict())
    ours.load_state_dict(hf.state_dict(), strict=True)
    ids = torch.randint(0, 300, (2, 33))
    with torch.no_grad():
        diff = (hf(ids).logits - ours(ids).logits).abs().max().item()
    assert diff < 1e-5


def test_causality():
    model = random_model()
    ids = torch.randint(0, 300, (1, 20))
    changed = ids.clone()
    changed[0, 12] = (ids[0, 12] + 1) % 300
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_ignored_labels_and_shift():
    model = random_model()
    ids = torch.randint(0, 300, (2, 10))
    labels = ids.clone()
    labels[:, :6] = -100
    out = model(ids, labels=labels)
    logits = out.logits[:, 5:-1].reshape(-1, 300)          # positions predicting tokens 6..9
    expected = torch.nn.functional.cross_entropy(logits, ids[:, 6:].reshape(-1))
    assert out.n_targets == 8
    assert torch.allclose(out.loss, expected, atol=1e-6)
    # changing an ignored label changes nothing
    labels2 = labels.clone()
    labels2[:, 2] = 5
    labels2[:, :6] = -100
    assert torch.equal(model(ids, labels=labels2).loss, out.loss)


def test_no_target_tokens_is_zero_not_nan():
    model = random_model()
    ids = torch.randint(0, 300, (2, 8))
    out = model(ids, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0 and out.n_targets == 0
    out.loss.backward()                                      # still differentiable


def test_gqa_shapes_and_param_count():
    cfg = get_preset("small")
    model = TinyMindForCausalLM(cfg)
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (512, 512)
    assert attn.k_proj.weight.shape == (128, 512) and attn.v_proj.weight.shape == (128, 512)
    assert 25e6 < model.num_parameters() < 27e6            # MiniMind2-Small: ~26M
    base = TinyMindForCausalLM(get_preset("base"))
    assert 100e6 < base.num_parameters() < 108e6           # MiniMind2: ~104M


def test_moe_routes_and_aux_loss():
    model = random_model(use_moe=True, num_experts=4, num_experts_per_tok=2).train()
    ids = torch.randint(0, 300, (3, 12))
    out = model(ids, labels=ids)
    assert out.logits.shape == (3, 12, 300)
    assert out.aux_loss is not None and out.aux_loss.item() > 0
    ce = model(ids, labels=ids, loss_reduction="sum")
    assert torch.allclose(out.loss, ce.loss / ce.n_targets + out.aux_loss, atol=1e-5)
    out.loss.backward()
    assert model.model.layers[0].mlp.gate.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_moe_aux_loss_is_one_for_uniform_routing():
    from model.model import MoE
    cfg = ModelConfig(vocab_size=10, hidden_size=8, num_attention_heads=2, num_key_value_heads=1,
                      use_moe=True, num_experts=4, num_experts_per_tok=1)
    moe = MoE(cfg)
    torch.nn.init.zeros_(moe.gate.weight)                  # uniform probabilities, ties go to expert 0
    _, aux = moe(torch.randn(1, 8, 8))
    assert abs(aux.item() - 1.0) < 1e-6                    # E * (1 * 1/E) = 1


def test_kv_cache_matches_full_forward():
    model = random_model()
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache(model.config, 2, 16, "cpu", torch.float32)
        a = model(ids[:, :10], kv_cache=cache).logits
        b = model(ids[:, 10:13], kv_cache=cache).logits     # chunk with a past
        c = model(ids[:, 13:14], kv_cache=cache).logits     # one token
        d = model(ids[:, 14:], kv_cache=cache).logits
    got = torch.cat([a, b, c, d], dim=1)
    assert (got - full).abs().max() < 1e-5


def test_left_padding_matches_unpadded():
    model = random_model()
    ids = torch.randint(3, 300, (1, 7))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.tensor([[0, 0, 0] + [1] * 7])
    with torch.no_grad():
        a = model(ids).logits[:, -1]
        b = model(padded, attention_mask=mask).logits[:, -1]
    assert (a - b).abs().max() < 1e-5


def test_targets_only_gives_the_same_loss_and_gradients():
    """Training computes logits only where a label is: the loss and every gradient equal the full path."""
    from factories import make_model
    model = make_model(seed=3, vocab_size=300).train()
    ids = torch.randint(0, 300, (3, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :5] = -100                                 # a prompt with no loss
    labels[2, 9:] = -100                                 # padding
    grads = []
    for targets_only in (False, True):
        model.zero_grad()
        out = model(ids, labels=labels, loss_reduction="sum", targets_only=targets_only)
        out.loss.backward()
        grads.append((out.loss.detach(), out.n_targets, [p.grad.clone() for p in model.parameters()]))
    (l0, n0, g0), (l1, n1, g1) = grads
    assert n0 == n1 == int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(l1, l0)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b)

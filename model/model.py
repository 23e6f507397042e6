"""The TinyMind decoder: a Llama-style causal language model written by hand, in reading order.

RMSNorm -> rotary embeddings -> grouped-query attention -> SwiGLU MLP (or a mixture of experts) ->
Block -> TinyMindModel -> TinyMindForCausalLM. State-dict keys are exactly Hugging Face Llama's, so
import and export are plain name mappings (scripts/convert_model.py).

    from model.config import get_preset
    from model.model import TinyMindForCausalLM
    model = TinyMindForCausalLM(get_preset("tiny"))
    out = model(input_ids, labels=input_ids)     # out.logits, out.loss
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from core.compiling import known_true
from model.config import ModelConfig
from model.masks import positions_and_mask


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in float32 as Llama does."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # x * rsqrt(mean(x^2) + eps) in one fused kernel, in float32, then the weight in x's dtype
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), None, self.eps).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary position embeddings (RoFormer, Su et al. 2021, eq. 34), grown on demand.

    Uses the "rotate half" pairing of Llama/HF (dimension i pairs with i + head_dim/2).
    """

    def __init__(self, head_dim, theta):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("cos_table", torch.empty(0), persistent=False)
        self.register_buffer("sin_table", torch.empty(0), persistent=False)

    def _grow(self, n):
        t = torch.arange(n, device=self.inv_freq.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq.float())           # (n, head_dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)                  # (n, head_dim)
        self.cos_table, self.sin_table = emb.cos(), emb.sin()

    def forward(self, position_ids, dtype, n=None):
        """position_ids (B, T) -> cos, sin of shape (B, 1, T, head_dim). n: an upper bound of the
        positions, when the caller knows it (saves a device sync)."""
        n = n if n is not None else int(position_ids.max()) + 1
        if self.cos_table.shape[0] < n or self.cos_table.device != self.inv_freq.device:
            self._grow(max(n, 2 * self.cos_table.shape[0], 256))
        cos = self.cos_table[position_ids].unsqueeze(1).to(dtype)
        sin = self.sin_table[position_ids].unsqueeze(1).to(dtype)
        return cos, sin


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Preallocated keys and values for every layer, so decoding never recomputes or copies the prompt.

    k[i], v[i]: (B, n_kv_head, max_len, head_dim). `length` is how many positions are filled; the model
    advances it after each forward.
    """

    def __init__(self, config, batch_size, max_len, device, dtype):
        shape = (batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.max_len = max_len
        self.length = 0

    def update(self, layer, k, v):
        """Write k, v (B, n_kv_head, T, head_dim) after the filled part; return all keys/values so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > max_len {self.max_len}")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    """Grouped-query attention (Ainslie et al. 2023) through F.scaled_dot_product_attention."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.num_attention_heads
        self.n_kv_head = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.n_head * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_head * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_head * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask=None, kv_cache=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)     # (B, n_head, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)                              # (B, n_kv, S, hd)
        rep = self.n_head // self.n_kv_head
        if mask is None and T == 1 and rep > 1:
            # decoding one token: the query heads that share a kv head become rows of one query, so
            # keys and values are read once and never copied (the cache is only ever sliced)
            q = q.view(B, self.n_kv_head, rep, self.head_dim)                         # (B, n_kv, rep, hd)
            y = F.scaled_dot_product_attention(q, k, v)                               # (B, n_kv, rep, hd)
            return self.o_proj(y.reshape(B, 1, self.n_head * self.head_dim))
        gqa = {}
        if rep > 1 and mask is None:
            gqa = {"enable_gqa": True}           # SDPA shares each kv head across its query heads
        elif rep > 1:
            k = k.repeat_interleave(rep, dim=1)                                       # (B, n_head, S, hd)
            v = v.repeat_interleave(rep, dim=1)
        # mask None: plain causal when q and k have the same length; otherwise a boolean (B, 1, T, S)
        # mask (model/masks.py). known_true: a Python bool even where torch.compile's T is symbolic.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and known_true(T > 1),
            dropout_p=self.dropout if self.training else 0.0, **gqa)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)              # (B, T, C)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        bias = config.mlp_bias
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    """Top-k routed mixture of SwiGLU experts with the Switch Transformer load-balancing loss.

    aux = num_experts * sum_e f_e * P_e (Fedus et al. 2021, eq. 4): f_e is the fraction of routing slots
    sent to expert e, P_e the mean router probability of e. Minimal when routing is uniform.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList(MLP(config) for _ in range(config.num_experts))

    def forward(self, x):
        B, T, C = x.shape
        x = x.reshape(B * T, C)                                                    # (N, C)
        probs = F.softmax(self.gate(x).float(), dim=-1)                            # (N, E)
        weights, chosen = probs.topk(self.top_k, dim=-1)                           # (N, k)
        if self.top_k > 1 and self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            # every expert runs, on zero rows if nothing is routed to it, so every parameter is in the
            # graph (DDP needs no find_unused_parameters)
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            y = expert(x[rows]) * weights[rows, slot].unsqueeze(-1).to(x.dtype)
            out.index_add_(0, rows, y)
        E = probs.shape[-1]
        f = F.one_hot(chosen, E).float().sum(dim=(0, 1)) / chosen.numel()           # (E,)
        aux = E * (f * probs.mean(dim=0)).sum()
        return out.view(B, T, C), aux


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MoE(config) if config.use_moe else MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask=None, kv_cache=None):
        x = x + self.dropout(self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache))
        h = self.mlp(self.post_attention_layernorm(x))
        aux = None
        if isinstance(h, tuple):
            h, aux = h
        return x + self.dropout(h), aux


class TinyMindModel(nn.Module):
    """Embeddings, the stack of blocks and the final norm (HF's `model.` prefix)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.dropout = nn.Dropout(config.dropout)
        self.gradient_checkpointing = False     # TinyMindForCausalLM.set_gradient_checkpointing


def token_loss(logits, targets, reduction):
    """Cross-entropy of each target (-100: none) in float32, "sum" or "none" (each target's, flattened)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=-100, reduction=reduction)


@dataclass
class CausalLMOutput:
    logits: torch.Tensor
    loss: Optional[torch.Tensor] = None       # cross-entropy (+ aux for reduction "mean")
    aux_loss: Optional[torch.Tensor] = None   # MoE load balancing, already times aux_loss_coef
    n_targets: int = 0                        # tokens that carried loss


class TinyMindForCausalLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = TinyMindModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.token_loss = token_loss              # compile_parts swaps in its compiled twin

    def _init_weights(self, module):
        """How each tensor starts: linear and embedding weights N(0, 0.02), biases 0, norm weights 1;
        the projections that write into the residual stream (o_proj, down_proj) get std / sqrt(2 * layers)
        so the residual variance does not grow with depth (GPT-2, Radford et al. 2019, sec. 2.3)."""
        std = 0.02
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, (Attention, MLP)):
            out = module.o_proj if isinstance(module, Attention) else module.down_proj
            nn.init.normal_(out.weight, mean=0.0, std=std / math.sqrt(2 * self.config.num_hidden_layers))

    def set_gradient_checkpointing(self, on=True):
        """Activation checkpointing (Chen et al. 2016): in training, keep only each block's input and
        recompute the block in backward (non-reentrant torch.utils.checkpoint, the RNG and autocast state
        restored), so a block's activations are held at a time instead of every block's; the same
        gradients for about a third more compute. Decoding with a cache and no-grad passes are unaffected."""
        self.model.gradient_checkpointing = bool(on)
        return self

    def compile_parts(self, mode):
        """torch.compile each block in place (state_dict keys kept) and the loss (its cast, log-softmax and
        pick fused); passes with a kv_cache stay eager. core/compiling.py checks that compiling works."""
        for block in self.model.layers:
            block.compile(mode=mode)
        self.token_loss = torch.compile(token_loss, mode=mode, dynamic=True)
        return self

    def num_parameters(self, trainable_only=False):
        params = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        return sum(p.numel() for p in params.values())

    def forward(self, input_ids, labels=None, attention_mask=None, kv_cache=None,
                loss_reduction="mean", last_only=False, targets_only=False, packed=None):
        """input_ids (B, T); labels (B, T) aligned with input_ids, -100 = no loss: the target shift
        happens here and nowhere else. attention_mask (B, S) with 1 for real tokens and 0 for padding,
        S = positions cached before + T. last_only computes logits for the last position only;
        targets_only (training) computes them only where a label is, as (n_targets, vocab): the same
        loss without the output layer's work on prompts and padding. loss_reduction "mean", "sum" or
        "none" (each target's loss; with targets_only, the targets in row-major order).
        packed = (position_ids (B, T), mask (B, 1, T, T) bool, select (B, T) bool), no cache: several
        sequences in one row that share a prefix (a benchmark question and each of its answers), each
        token seeing what the mask allows at the positions given; logits only where select is, as
        (n_selected, vocab) (evaluation/loglik.py builds these)."""
        T = input_ids.shape[1]
        past = kv_cache.length if kv_cache is not None else 0
        if packed is not None and (kv_cache is not None or labels is not None):
            raise ValueError("packed rows take neither a kv_cache nor labels")
        position_ids, mask, select = positions_and_mask(input_ids, past, attention_mask, packed)

        x = self.model.dropout(self.model.embed_tokens(input_ids))                  # (B, T, C)
        cos, sin = self.model.rotary(position_ids, x.dtype, n=past + T)
        aux_total = None
        recompute = self.model.gradient_checkpointing and self.training and torch.is_grad_enabled() \
            and kv_cache is None
        for layer in self.model.layers:
            if recompute:
                x, aux = checkpoint(layer, x, cos, sin, mask, None, use_reentrant=False)
            elif kv_cache is not None:   # with a cache: eager forward (compiled, a graph per cache length)
                x, aux = layer.forward(x, cos, sin, mask, kv_cache)
            else:
                x, aux = layer(x, cos, sin, mask, kv_cache)
            if aux is not None:
                aux_total = aux if aux_total is None else aux_total + aux
        if kv_cache is not None:
            kv_cache.length += T
        x = self.model.norm(x)
        if last_only:
            x = x[:, -1:]
        elif select is not None:
            x = x[select]                                                           # (n_selected, C)
        targets = None
        if labels is not None:
            # token t predicts token t+1: shift the labels left (the last position gets -100) rather
            # than slicing the logits, which would copy them
            targets = F.pad(labels[:, 1:], (0, 1), value=-100)
            if targets_only and bool((targets == -100).any()):
                keep = targets != -100
                x, targets = x[keep], targets[keep]                                 # (n_targets, C)
        logits = self.lm_head(x)                        # (B, T, vocab); (n_targets, vocab) with targets_only
        aux_loss = aux_total * self.config.aux_loss_coef if aux_total is not None else None

        loss, n_targets = None, 0
        if targets is not None:
            n_targets = int((targets != -100).sum())
            loss = self.token_loss(logits, targets, "none" if loss_reduction == "none" else "sum")
            if loss_reduction == "mean":
                loss = loss / max(n_targets, 1)      # a batch with no target gives 0, not NaN
                if aux_loss is not None:
                    loss = loss + aux_loss
        return CausalLMOutput(logits=logits, loss=loss, aux_loss=aux_loss, n_targets=n_targets)


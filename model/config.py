"""ModelConfig: the shape of a TinyMind decoder, with Hugging Face (Llama/Qwen2) field names.

    from model.config import get_preset
    cfg = get_preset("small")          # MiniMind2-Small's shape, the default
"""
from dataclasses import asdict, dataclass, fields


@dataclass
class ModelConfig:
    vocab_size: int = 6400                # tokenizer size; embed_tokens and lm_head have this many rows
    hidden_size: int = 512                # width of the residual stream
    num_hidden_layers: int = 8            # number of transformer blocks
    num_attention_heads: int = 8          # query heads
    num_key_value_heads: int = 2          # key/value heads (grouped-query attention when < query heads)
    intermediate_size: int = 0            # SwiGLU hidden width; 0 = 8/3 * hidden rounded up to 64
    head_dim: int = 0                     # per-head width; 0 = hidden_size // num_attention_heads
    max_position_embeddings: int = 32768  # longest sequence rope is defined for
    rope_theta: float = 1e6               # rope base frequency (Su et al. 2021, RoFormer)
    rms_norm_eps: float = 1e-5            # epsilon inside RMSNorm
    attention_bias: bool = False          # bias on q/k/v projections (Qwen2 uses True)
    mlp_bias: bool = False                # bias on the MLP projections
    tie_word_embeddings: bool = True      # lm_head shares the embedding matrix
    dropout: float = 0.0                  # dropout on attention probabilities and residual branches
    use_moe: bool = False                 # mixture-of-experts feed-forward instead of one MLP
    num_experts: int = 4                  # experts per MoE layer
    num_experts_per_tok: int = 1          # experts each token is routed to (top-k)
    norm_topk_prob: bool = True           # renormalise the top-k router probabilities to sum to 1
    aux_loss_coef: float = 0.01           # weight of the load-balancing loss (Switch Transformer, eq. 4)
    bos_token_id: int = -1                # token prepended by the tokenizer, -1 = none
    eos_token_id: int = 2                 # end of text
    pad_token_id: int = 1                 # padding (never carries loss)
    model_type: str = "tinymind"          # informational: "llama", "qwen2", "mistral" for imports

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer (got {getattr(self, name)!r})")
        if self.intermediate_size <= 0:
            self.intermediate_size = 64 * ((int(self.hidden_size * 8 / 3) + 63) // 64)
        if self.head_dim <= 0:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                                 f"{self.num_attention_heads}")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim % 2:       # rope rotates pairs of dimensions
            raise ValueError(f"head_dim {self.head_dim} (hidden_size / num_attention_heads) must be even "
                             "for rotary embeddings")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError("num_experts_per_tok must be at most num_experts")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


PRESETS = {
    # MiniMind2-Small: ~26M parameters; file names use its hidden size (`*_512.pth`)
    "small": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2),
    # MiniMind2: ~104M parameters
    "base": dict(hidden_size=768, num_hidden_layers=16, num_attention_heads=8, num_key_value_heads=2),
    # small with 4 experts, top-1 routing
    "moe": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                use_moe=True, num_experts=4, num_experts_per_tok=1),
    # for quick CPU runs and tests
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
}
DEFAULT_PRESET = "small"


def get_preset(name=DEFAULT_PRESET, **overrides):
    """A ModelConfig from a named preset, with any fields overridden."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})

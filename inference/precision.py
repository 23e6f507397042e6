"""THE inference precisions (--dtype of eval_model.py, the web demo, the benchmark evaluator and the server):
float32, bfloat16, float16, int8 or int4, applied at load time to a model built from its float checkpoint (no
other file format). inference.load.load_for_inference(dtype=NAME) calls apply_precision.

int8 is weight-only with one scale per output channel (symmetric, round to nearest: w ~ q * s, q in
[-127, 127]): every nn.Linear, lm_head included, becomes an Int8Linear holding a quarter of the float32
weights' bytes, which is what decoding one token at a time is bound by. Its matrix multiply is torch's CPU
int8 weight-only kernel (torch._weight_int8pack_mm, bfloat16 activations) for a few rows (decoding), and a
dequantised matrix in the model's dtype for many (a prompt, a scoring batch), where a dense matmul is
faster. The rest of the model (embeddings, norms, the KV cache) runs in bfloat16 where the hardware computes
it natively (cpu_has_bf16, or a CUDA device with bf16), else in float32.

int4 (Int4Linear) is 4-bit codes with a scale and a zero per group of 32 inputs, through torch's CPU int4
kernel at every row count; the output layer stays int8 (quantize_linears says why), and so does a layer the
kernel cannot take (not on a CPU, or a width of no whole groups).

    from inference.precision import apply_precision
    apply_precision(model, "int8")                      # in place; returns the model
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.lora import LoRALinear

PRECISIONS = ("float32", "bfloat16", "float16", "int8", "int4")  # the --dtype choices, float32 first
QUANTIZED = ("int8", "int4")
FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
KERNEL_ROWS = 16      # up to this many rows take the int8 kernel (faster up to ~24 here); more: a dense matmul


def cpu_has_bf16():
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, and torch's kernels use AVX-512:
    ATEN_CPU_CAPABILITY=avx2 turns that off): there bfloat16 roughly doubles training and decoding speed
    (BENCHMARKS.md); elsewhere it is emulated and slower than float32."""
    if not torch.backends.cpu.get_cpu_capability().startswith(("AVX512", "AMX")):
        return False
    return any(getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported",
                                                                      "_is_amx_tile_supported"))


def native_bf16(device):
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def precision_hint(name, device):
    """A line to print when the asked precision is slow on this hardware, else None."""
    device = torch.device(device)
    if name == "bfloat16" and device.type == "cpu" and not cpu_has_bf16():
        return ("--dtype bfloat16: this CPU has no AVX512-BF16/AMX, so bfloat16 is emulated and slower than "
                "float32; use --dtype int8 (fastest decoding) or float32")
    if name == "float16" and device.type == "cpu":
        return "--dtype float16: a CPU has no fast float16 matmul; use --dtype bfloat16, int8 or float32"
    if name == "int8" and device.type != "cpu":
        return (f"--dtype int8: on {device.type} there is no int8 kernel here, so each layer runs a dequantised "
                "matmul (slower than bfloat16, no memory saved); use --dtype bfloat16")
    if name == "int4" and device.type != "cpu":
        return (f"--dtype int4: on {device.type} there is no int4 kernel here, so every layer is int8 with a "
                "dequantised matmul (slower than bfloat16); use --dtype bfloat16")
    return None


def quantize_weight(weight):
    """(out, in) float -> (int8 (out, in), float32 scales (out,)): w ~ q * s per output channel."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale


class Int8Linear(nn.Module):
    """An nn.Linear with its weight stored as int8 plus a float scale per output channel (inference only).

    dtype: the dtype of its scales and bias (the model's). Few rows go through torch's int8 kernel with
    bfloat16 activations (its fast path on a CPU; float32 activations there are an unvectorised loop);
    more rows multiply by the dequantised weight in `dtype`."""

    def __init__(self, linear: nn.Linear, dtype=torch.float32):
        super().__init__()
        q, scale = quantize_weight(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", q)
        self.register_buffer("scale", scale.to(dtype))              # cast with the model, as its floats are
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))
        # torch's CPU kernel (2.13) needs the input width to be a multiple of 16: other widths give wrong
        # numbers or crash, so they take the dense path
        self.kernel = hasattr(torch, "_weight_int8pack_mm") and linear.in_features % 16 == 0

    def dequantized(self):
        """The (out, in) weight in the scales' dtype, as the int8 values and scales give it."""
        return self.weight_int8.to(self.scale.dtype) * self.scale[:, None]

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if self.kernel and x2.shape[0] <= KERNEL_ROWS and x2.device.type == "cpu":
            # the kernel takes bfloat16 activations and scales (a no-op cast in a bfloat16 model)
            y = torch._weight_int8pack_mm(x2.to(torch.bfloat16).contiguous(), self.weight_int8,
                                          self.scale.to(torch.bfloat16)).to(x.dtype)
            if self.bias is not None:
                y = y + self.bias
        else:
            y = F.linear(x2, self.weight_int8.to(x.dtype)) * self.scale.to(x.dtype)
            if self.bias is not None:
                y = y + self.bias.to(x.dtype)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


INT4_GROUP = 32      # input weights per scale and zero of int4: the blocks of the Q4_1 file SmolLM2 comes from


def int4_fits(linear, group=INT4_GROUP):
    """Whether torch's CPU int4 kernel takes this layer: whole groups along the input."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and linear.in_features % group == 0


def quantize_int4(weight, group=INT4_GROUP):
    """(out, in) float -> (int32 codes 0..15 (out, in), scales_and_zeros (in / group, out, 2) float32):
    asymmetric per group of `group` inputs, w ~ (q - 8) * scale + zero (the layout of torch's int4 kernel)."""
    out, width = weight.shape
    w = weight.detach().float().reshape(out, width // group, group)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = (high - low).clamp(min=1e-9) / 15
    q = ((w - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(out, width)
    zero = low + 8 * scale
    return q, torch.cat([scale, zero], -1).transpose(0, 1).contiguous()


class Int4Linear(nn.Module):
    """An nn.Linear held as 4-bit codes, a scale and a zero per group of INT4_GROUP inputs (inference only),
    packed once for torch's CPU int4 kernel (torch._weight_int4pack_mm_for_cpu, bfloat16 activations),
    which every row count takes: half the bytes of int8 for decoding to stream."""

    def __init__(self, linear: nn.Linear, dtype=torch.float32, group=INT4_GROUP):
        super().__init__()
        q, scales_and_zeros = quantize_int4(linear.weight, group)
        self.in_features, self.out_features, self.group = linear.in_features, linear.out_features, group
        self.register_buffer("weight_int4", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))
        # cast with the model, as Int8Linear's scales are; the kernel takes them in bfloat16
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(dtype))
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))

    def _matmul(self, x2):
        """(rows, in) -> (rows, out) bfloat16 through the kernel."""
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x2.to(torch.bfloat16).contiguous(), self.weight_int4,
                                                          self.group, self.scales_and_zeros.to(torch.bfloat16))

    def dequantized(self):
        """The (out, in) float32 weight the codes give (the kernel on the identity: its own arithmetic)."""
        return self._matmul(torch.eye(self.in_features, device=self.weight_int4.device)).float().t()

    def forward(self, x):
        shape = x.shape
        y = self._matmul(x.reshape(-1, shape[-1]))
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 groups of {self.group}"


def quantize_linears(model, dtype, bits=8):
    """Replace every nn.Linear of model (in place) by an Int8Linear (bits 8) or an Int4Linear (bits 4, where
    its input width takes whole groups; else Int8Linear) computing in dtype; the rest of the model is cast
    to dtype. A tied lm_head gets its own quantised copy, in 8 bits also for int4 (as llama.cpp's 4-bit
    types keep the output layer at 6 bits: in 4 bits SmolLM2's greedy replies kept float32's first 7.2
    tokens on average, in 8 bits 18.9, for 4% of the decode speed); the embedding keeps its float rows."""
    if any(isinstance(m, LoRALinear) and not m.merged for m in model.modules()):
        raise ValueError(f"int{bits} needs the adapter merged into the weights (load with merge=True)")
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in linears:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        four = bits == 4 and int4_fits(linear) and name != "lm_head"
        setattr(parent, child, Int4Linear(linear, dtype) if four else Int8Linear(linear, dtype))
    model.to(dtype=dtype)           # embeddings and norms; int8 buffers stay int8 (to(dtype) casts floats only)
    return model


def apply_precision(model, name, device=None):
    """Cast (float32, bfloat16, float16) or quantise (int8) a float model in place; returns it. device:
    where it runs (default: where its weights are), which decides int8's compute dtype."""
    if name not in PRECISIONS:
        raise ValueError(f"precision {name!r}: use one of {', '.join(PRECISIONS)}")
    if name in FLOAT_DTYPES:
        return model.to(dtype=FLOAT_DTYPES[name])
    device = device or next(model.parameters()).device
    bits = int(name[3:]) if torch.device(device).type == "cpu" else 8      # the int4 kernel is the CPU's
    return quantize_linears(model, torch.bfloat16 if native_bf16(device) else torch.float32, bits)


def precision_of(model):
    """The precision name of a model apply_precision made (int4 or int8 when it has such layers)."""
    if any(isinstance(m, Int4Linear) for m in model.modules()):
        return "int4"
    if any(isinstance(m, Int8Linear) for m in model.modules()):
        return "int8"
    dtype = next(model.parameters()).dtype
    return next((k for k, v in FLOAT_DTYPES.items() if v == dtype), str(dtype))

"""LoRALinear's fused autograd functions: y = x W^T + b + s (x A^T) B^T with the additions done inside the
matrix multiplies, forward and backward written by hand (the gradients are autograd's for the plain
expression; tests/test_lora.py checks them against it and with gradcheck).

LoRAFunction serves a base in the input's dtype; HeldLoRAFunction a frozen base held in bfloat16 under
autocast (trainer.components.hold_frozen_in). model/lora.py's LoRALinear.forward picks one, or neither
(dropout on the LoRA input, or autocast over a base that is not held).

    from model.lora_fused import LoRAFunction
    y = LoRAFunction.apply(x, weight, bias, lora_a, lora_b, scaling)
"""
import torch


class LoRAFunction(torch.autograd.Function):
    """y = x W^T + b + s (x A^T) B^T with its gradients, the additions done inside the matrix multiplies.

    The same math autograd would do for the plain expression, but each sum of a base term and a low-rank
    term is an in-place addmm into the base term instead of a separate pass over an (N, out) or (N, in)
    tensor, and the scale s rides on addmm's alpha: forward and backward each save one full elementwise
    pass per wrapped layer. Used when there is no LoRA dropout, and no autocast or a base held in its dtype
    (see LoRALinear.forward).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])                                            # (N, in)
        h = x2 @ lora_a.t()                                                      # (N, r)
        y = x2 @ weight.t() if bias is None else torch.addmm(bias, x2, weight.t())  # (N, out)
        y.addmm_(h, lora_b.t(), alpha=scaling)                                   # += s * h B^T
        ctx.save_for_backward(x2, h, weight, lora_a, lora_b)
        ctx.scaling, ctx.shape, ctx.has_bias = scaling, shape, bias is not None
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        x2, h, weight, lora_a, lora_b = ctx.saved_tensors
        s = ctx.scaling
        g = grad_y.reshape(-1, grad_y.shape[-1])                                 # (N, out)
        gh = g @ lora_b                                                          # (N, r), unscaled
        grad_x = grad_w = grad_b = grad_a = grad_lb = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ weight).addmm_(gh, lora_a, alpha=s).view(ctx.shape)   # g W + s gh A
        if ctx.needs_input_grad[1]:
            grad_w = g.t() @ x2
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        if ctx.needs_input_grad[3]:
            grad_a = torch.mm(gh.t(), x2).mul_(s)                                # s gh^T x
        if ctx.needs_input_grad[4]:
            grad_lb = torch.mm(g.t(), h).mul_(s)                                 # s g^T h
        return grad_x, grad_w, grad_b, grad_a, grad_lb, None


class HeldLoRAFunction(torch.autograd.Function):
    """LoRAFunction for a frozen base held in a low precision (bfloat16) under autocast: x W^T in the base's
    dtype, the low-rank term and the sum in float32, so the output is float32.

    A sum rounded to bfloat16 drops any change below half a unit in the last place of the base output (8
    bits of mantissa): a young adapter's small update would be lost, the same way at every step, and the
    run learns more slowly than in float32 (BENCHMARKS.md measures it). Here the update survives into
    the residual stream; the gradients of A and B are computed in float32."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])                                            # (N, in), as it came
        low = x2.to(weight.dtype)
        y = (low @ weight.t() if bias is None else torch.addmm(bias, low, weight.t())).float()
        h = x2.float() @ lora_a.t()                                              # (N, r) float32
        y.addmm_(h, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(x2, h, weight, lora_a, lora_b)
        ctx.scaling, ctx.shape = scaling, shape
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):          # the base weight and bias are frozen: no gradient for them
        # autocast off as in forward: torch.compile traces this backward under the forward's autocast,
        # which would turn gh into bfloat16 and break the float32 addmm_ below
        with torch.autocast(grad_y.device.type, enabled=False):
            x2, h, weight, lora_a, lora_b = ctx.saved_tensors
            s = ctx.scaling
            g = grad_y.reshape(-1, grad_y.shape[-1]).float()                         # (N, out)
            gh = g @ lora_b                                                          # (N, r)
            grad_x = grad_a = grad_lb = None
            if ctx.needs_input_grad[0]:
                grad_x = (g.to(weight.dtype) @ weight).float().addmm_(gh, lora_a, alpha=s)
                grad_x = grad_x.to(x2.dtype).view(ctx.shape)
            if ctx.needs_input_grad[3]:
                grad_a = torch.mm(gh.t(), x2.float()).mul_(s)
            if ctx.needs_input_grad[4]:
                grad_lb = torch.mm(g.t(), h).mul_(s)
            return grad_x, None, None, grad_a, grad_lb, None

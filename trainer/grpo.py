"""Reinforcement learning with verifiable rewards (GRPO and its successors): group advantages and the
policy losses, equal to TRL 1.16's GRPOTrainer for the same inputs (tests/test_grpo_parity.py).

Each completion i of a prompt's group of G gets the advantage A_i = (r_i - mean(group)) / (std + 1e-4):
std of its group (scale "group"), of the whole step's rewards ("batch"), or no division ("none"); std is
the sample standard deviation (Bessel-corrected, as TRL; MiniMind's torch.std is the same). Per completion
token t, with ratio w = exp(log pi - log pi_old) (pi_old: the policy as it sampled):
    grpo, dapo, dr_grpo   -min(w A, clip(w, 1 - epsilon, 1 + epsilon_high) A)      (Shao et al. 2024; Yu et
                          al. 2025, DAPO; Liu et al. 2025, Dr. GRPO)
    cispo                 -sg(min(w, epsilon_high)) A log pi                          (MiniMax-M1, 2025)
  + beta * (exp(ref - log pi) - (ref - log pi) - 1)        the k3 estimate of KL(pi || ref) (--beta > 0)
and the aggregation: grpo averages each completion's tokens, then the completions; dapo and cispo average
every token of the step; dr_grpo divides the step's token sum by completions x --max_new_tokens. Across
micro-batches and processes the denominators are the step's, so accumulation and DDP give one big batch's
gradient.

Library module (trainer/grpo_objective.py runs it in the loop):
    from trainer.grpo import PolicyLoss, group_advantages
"""
from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "cispo")
SCALES = ("group", "batch", "none")
EPS = 1e-4                   # TRL's: the advantage's denominator is std + EPS


def group_std(rewards, G):
    """(N,) rewards in groups of G -> each row's group's sample standard deviation (N,)."""
    return rewards.view(-1, G).std(dim=1).repeat_interleave(G) if G > 1 else torch.zeros_like(rewards)


def group_advantages(rewards, G, scale="group", batch_std=None):
    """(N,) rewards, prompt i's completions at rows i*G..i*G+G-1 -> (advantages (N,), the std each row was
    scaled by (N,)). batch_std: the std of the whole step's rewards (all micro-batches and processes) for
    scale "batch"; by default these rewards'. A row whose std is 0 gets advantage 0 (its group learns nothing)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}")
    mean = rewards.view(-1, G).mean(dim=1).repeat_interleave(G)
    if scale == "batch":
        std = (rewards.std() if batch_std is None else torch.as_tensor(batch_std, dtype=rewards.dtype)).expand_as(rewards)
    else:
        std = group_std(rewards, G)
    adv = rewards - mean
    return (adv / (std + EPS) if scale != "none" else adv), std


@dataclass
class PolicyLoss:
    """The policy loss of --loss_type over a micro-batch's completion tokens."""
    loss_type: str = "dapo"
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float = 0.2
    max_new_tokens: int = 256            # dr_grpo's constant length

    def per_token(self, logps, old_logps, advantages, ref_logps=None):
        """-> (per-token loss (N, C), per-token KL (N, C) or None, clipped (N, C) bool: the tokens whose
        ratio the clip held (TRL's clip_ratio/region_mean; cispo: its cispo_clip_ratio))."""
        adv = advantages.unsqueeze(1)
        ratio = torch.exp(logps - old_logps)
        if self.loss_type == "cispo":
            loss = -torch.clamp(ratio, max=self.epsilon_high).detach() * adv * logps
            clipped = (ratio > self.epsilon_high) & (adv > 0)
        else:
            clip = torch.clamp(ratio, 1 - self.epsilon, 1 + self.epsilon_high)
            loss = -torch.min(ratio * adv, clip * adv)
            clipped = ((ratio < 1 - self.epsilon) & (adv < 0)) | ((ratio > 1 + self.epsilon_high) & (adv > 0))
        kl = None
        if self.beta:
            d = ref_logps - logps
            kl = torch.exp(d) - d - 1
            loss = loss + self.beta * kl
        return loss, kl, clipped

    def aggregate(self, per_token, mask, n_seqs, n_tokens):
        """The micro-batch's share of the step's loss: n_seqs and n_tokens are the step's completion and
        completion-token counts (all micro-batches, all processes)."""
        mask = mask.to(per_token.dtype)
        if self.loss_type == "grpo":
            return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / max(n_seqs, 1)
        if self.loss_type == "dr_grpo":
            return (per_token * mask).sum() / max(n_seqs * self.max_new_tokens, 1)
        return (per_token * mask).sum() / max(n_tokens, 1.0)

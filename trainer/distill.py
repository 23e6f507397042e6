"""Knowledge distillation for full SFT and LoRA runs (--teacher): the student learns the answers' tokens
and the teacher's distribution over them at once (Hinton et al. 2015):

    loss per answer token = alpha * CE(student, token) + (1 - alpha) * T^2 * KL(teacher_T || student_T)

where _T is the softmax at temperature T (--temperature) and alpha is --alpha. Both terms are over the
trained tokens only (the replies), summed and divided by the step's target count on all ranks, as the
cross-entropy objective of trainer/step.py. The teacher is any model TinyMind loads (a name in out/, a
.pth, an adapter on its base, a Hugging Face folder, a GGUF file), run without gradients in
--teacher_dtype (on a CPU bfloat16 or int8 make it cheaper); it must share the student's tokenizer.

Library module; trainer/train_full_sft.py and train_lora.py use it:
    run.objective = teacher_objective(cfg, tokenizer, config, run.dist.device, say)
"""
import contextlib
import itertools

import torch
import torch.nn.functional as F

from core.errors import UserError
from inference.load import find_model, load_model_spec
from trainer.distributed import all_reduce_sum


def distill_terms(student_logits, teacher_logits, targets, temperature):
    """(CE sum, KL(teacher || student) sum) over rows of (n, vocab) logits at the target positions, in float32."""
    s, t = student_logits.float(), teacher_logits.float()
    ce = F.cross_entropy(s, targets, reduction="sum")
    log_s, log_t = F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1)
    kl = (log_t.exp() * (log_t - log_s)).sum()
    return ce, kl


class DistillObjective:
    """What trainer/loop.py asks of an objective (see trainer/step.TokenObjective), with a teacher."""

    def __init__(self, teacher, alpha, temperature, source=None):
        self.teacher, self.alpha, self.temperature, self.source = teacher, alpha, temperature, source

    def record(self, cfg):
        """What the run's checkpoint records of its teacher."""
        return {"teacher": str(self.source), "alpha": self.alpha, "temperature": self.temperature,
                "teacher_dtype": cfg.teacher_dtype}

    def prepare(self, run, model, train_set, val_set, collate, dtype, autocast):
        pass

    def terms(self, model, batch, dev, autocast):
        """(loss sum as trained, CE sum, KL sum, target count, aux loss) of one micro-batch."""
        ids, labels = batch["input_ids"].to(dev, non_blocking=True), batch["labels"].to(dev, non_blocking=True)
        with torch.no_grad():
            teacher = self.teacher(ids, labels=labels, loss_reduction="sum", targets_only=True)
        with autocast:
            res = model(ids, labels=labels, loss_reduction="sum", targets_only=True)
        targets = F.pad(labels[:, 1:], (0, 1), value=-100)
        targets = targets[targets != -100]
        ce, kl = distill_terms(res.logits, teacher.logits, targets, self.temperature)
        loss = self.alpha * ce + (1 - self.alpha) * self.temperature ** 2 * kl
        return loss, ce, kl, len(targets), res.aux_loss

    def accumulate(self, ddp_model, micro, dist, scaler, autocast):
        dev = dist.device
        n = torch.tensor([sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)], dtype=torch.float64, device=dev)
        n_targets = all_reduce_sum(n, dist).item()
        sums = torch.zeros(4, dtype=torch.float64, device=dev)          # loss, tokens, CE, KL
        for i, batch in enumerate(micro if n_targets > 0 else []):
            sync = i == len(micro) - 1 or not dist.enabled
            with contextlib.nullcontext() if sync else ddp_model.no_sync():
                loss, ce, kl, _, aux = self.terms(ddp_model, batch, dev, autocast)
                scaled = loss * (dist.world_size / n_targets)
                if aux is not None:
                    scaled = scaled + aux / len(micro)
                scaler.scale(scaled).backward()
            sums += torch.stack([loss.detach(), torch.zeros((), device=dev), ce.detach(), kl.detach()]).double()
        sums[1] = sum(b["attention_mask"].sum().item() if "attention_mask" in b else b["input_ids"].numel()
                      for b in micro)
        all_reduce_sum(sums, dist)
        return sums[:2], n_targets, {"ce": sums[2].item(), "kl": sums[3].item()}

    @torch.no_grad()
    def validate(self, model, loader, dist, autocast, max_batches=0):
        """-> (validation cross-entropy per target token, {"kl": KL per target token})."""
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=dist.device)
        for batch in itertools.islice(loader, max_batches or None):
            _, ce, kl, n, _ = self.terms(model, batch, dist.device, autocast)
            sums += torch.tensor([ce.item(), kl.item(), n], dtype=torch.float64, device=dist.device)
        model.train()
        all_reduce_sum(sums, dist)
        n = max(sums[2].item(), 1)
        return sums[0].item() / n, {"kl": sums[1].item() / n}


def teacher_objective(cfg, tokenizer, config, device, say=print):
    """The DistillObjective of --teacher (its model loaded in --teacher_dtype, eval mode, frozen), or None.
    A teacher with another tokenizer or output layer than the student's (config) is one line."""
    if not cfg.teacher:
        return None
    _, source = find_model(cfg.out_dir, cfg.teacher)
    loaded = load_model_spec(cfg.teacher, cfg.out_dir, device=device, dtype=cfg.teacher_dtype)
    if loaded.tokenizer.sha256 != tokenizer.sha256:
        raise UserError(f"--teacher {cfg.teacher}: its tokenizer is not the student's (sha256 "
                        f"{loaded.tokenizer.sha256[:12]} vs {tokenizer.sha256[:12]}); teacher and student must share "
                        "one (black-box distillation needs none: scripts/make_pairs.py writes a teacher's answers)")
    vocab, theirs = config.vocab_size, loaded.model.config.vocab_size
    if vocab != theirs:
        raise UserError(f"--teacher {cfg.teacher}: its output layer has {theirs:,} tokens and the student's "
                        f"{vocab:,}; distil from a model of the same vocabulary")
    loaded.model.requires_grad_(False).eval()
    say(f"teacher {loaded.label} ({cfg.teacher_dtype}): loss = {cfg.alpha:g} * CE + {1 - cfg.alpha:g} * "
        f"{cfg.temperature:g}^2 * KL(teacher || student) at temperature {cfg.temperature:g}")
    return DistillObjective(loaded.model, cfg.alpha, cfg.temperature, source)

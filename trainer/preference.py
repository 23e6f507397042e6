"""Preference training (DPO and its variants): the answers' log-probabilities, the losses, the reference
model and the objective trainer/loop.py runs for trainer/train_dpo.py.

A pair's log-probability is summed over its answer's trained tokens only (the reply and its end token:
dataset/preference.encode_answer), never over the prompt or padding. Losses (Rafailov et al. 2023, DPO;
Mitchell 2023, conservative DPO; Azar et al. 2023, IPO; Meng et al. 2024, SimPO; Pang et al. 2024, RPO),
equal to TRL 1.16's (tests/test_dpo_parity.py):
    sigmoid   -(1-e) log s(b d) - e log s(-b d),  d = (log pi_c - log ref_c) - (log pi_r - log ref_r)
    ipo       (d' - 1/(2b))^2, d' = the same log-ratios each divided by its answer's token count
    simpo     -(1-e) log s(b (avg_c - avg_r) - g) - e log s(...),  avg = log pi / tokens (no reference)
    + rpo_alpha * the mean negative log-likelihood of the chosen answers' tokens (--rpo_alpha)
Rewards (logged): b * (log pi - log ref); for SimPO b * avg.

Library module:
    from trainer.preference import PreferenceLoss, PreferenceObjective, Reference
"""
import contextlib
import copy
import hashlib
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from checkpoint import layout
from checkpoint.pth import atomic_torch_save, read_pth
from model.lora import adapters_disabled, unwrap_model
from trainer.components import hold_frozen_in
from trainer.distributed import all_reduce_sum

LOSS_TYPES = ("sigmoid", "ipo", "simpo")
TABLE_VERSION = 2          # of a precomputed reference table: 1 filled the validation rows from the training set
# the sums a step keeps per pair (and the chosen tokens' NLL for --rpo_alpha), in this order
SUMS = ("loss", "reward_chosen", "reward_rejected", "accuracy", "logps_chosen", "logps_rejected")


def answer_logps(model, input_ids, labels):
    """-> (summed log-probability of each row's label tokens (R,) in float32, their count (R,), the
    model's output). The output layer runs on the label positions only; gradients flow."""
    res = model(input_ids, labels=labels, loss_reduction="none", targets_only=True)
    keep = F.pad(labels[:, 1:], (0, 1), value=-100) != -100
    rows = keep.nonzero()[:, 0]
    logps = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device).index_add(0, rows, -res.loss)
    return logps, keep.sum(1), res


@dataclass
class PreferenceLoss:
    """The per-pair loss of --loss_type (the module docstring's formulas) -> (losses, chosen rewards,
    rejected rewards), each (B,). ref_* are None for SimPO."""
    loss_type: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5

    @property
    def needs_reference(self):
        return self.loss_type != "simpo"

    def smoothed(self, logits):
        e = self.label_smoothing
        return -(1 - e) * F.logsigmoid(self.beta * logits) - e * F.logsigmoid(-self.beta * logits)

    def __call__(self, pol_c, pol_r, n_c, n_r, ref_c=None, ref_r=None):
        n_c, n_r = n_c.clamp(min=1).to(pol_c.dtype), n_r.clamp(min=1).to(pol_r.dtype)
        if self.loss_type == "simpo":
            avg_c, avg_r = pol_c / n_c, pol_r / n_r
            losses = self.smoothed(avg_c - avg_r - self.simpo_gamma / self.beta)
            return losses, self.beta * avg_c.detach(), self.beta * avg_r.detach()
        ratio_c, ratio_r = pol_c - ref_c, pol_r - ref_r
        if self.loss_type == "ipo":
            losses = (ratio_c / n_c - ratio_r / n_r - 1 / (2 * self.beta)) ** 2
        else:
            losses = self.smoothed(ratio_c - ratio_r)
        return losses, self.beta * ratio_c.detach(), self.beta * ratio_r.detach()


class Reference:
    """The frozen model the log-ratios are taken against, the policy as it starts, by kind:
        "copy"           full fine-tuning: a copy made before the first step, held in the compute dtype
        "adapter_off"    a new LoRA: the same model with its adapters switched off (no second copy)
        "adapter_start"  a LoRA continued from an adapter (--from_lora): the same model with the adapter's
                         starting weights swapped in (a copy of the LoRA weights only)
    With precompute, every pair's reference log-probabilities are computed once before training and kept
    in the run's state folder, where a resumed run finds them."""
    KINDS = ("copy", "adapter_off", "adapter_start")

    def __init__(self, model, kind, dtype, precompute):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}")
        self.kind, self.precompute, self.table = kind, precompute, {}
        self.model = self.start = None
        m = unwrap_model(model)
        if kind == "copy":
            self.model = copy.deepcopy(m).requires_grad_(False).eval()
            hold_frozen_in(self.model, dtype)
        elif kind == "adapter_start":
            self.start = {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def logps(self, policy, batch, autocast, split=None):
        """(chosen, rejected) reference log-probabilities of a collated batch, each (B,): from the table of
        its dataset (split "train" or "val", as precomputed), else computed now."""
        if split is not None and split in self.table:
            return self.table[split][batch["index"]].to(batch["input_ids"].device).unbind(1)
        dev = next(unwrap_model(policy).parameters()).device
        ids, labels = batch["input_ids"].to(dev), batch["labels"].to(dev)
        if self.model is not None:
            with autocast:
                logps = answer_logps(self.model, ids, labels)[0]
        else:
            m = unwrap_model(policy)
            was = m.training
            m.eval()
            with self.as_reference(m), autocast:
                logps = answer_logps(m, ids, labels)[0]
            m.train(was)
        return logps.chunk(2)

    @contextlib.contextmanager
    def as_reference(self, m):
        """The policy module m as the reference within the block: adapters off, or their starting weights in."""
        if self.kind == "adapter_off":
            with adapters_disabled(m):
                yield
            return
        params = dict(m.named_parameters())
        now = {n: params[n].detach().clone() for n in self.start}
        try:
            for n, v in self.start.items():
                params[n].data.copy_(v)
            yield
        finally:
            for n, v in now.items():
                params[n].data.copy_(v)

    def prepare(self, policy, sets, collate, batch_size, autocast, dist, folder, identity, say):
        """With precompute: the table of each named dataset's reference log-probabilities, read from
        folder when it was made for these samples and this reference (identity), else computed (each rank
        a share, summed) and kept there. The copied reference is then let go."""
        if not self.precompute:
            return
        identity = {**identity, "version": TABLE_VERSION, **{name: dataset_digest(ds) for name, ds in sets.items()}}
        path = layout.reference_path(folder)
        saved = read_pth(path) if path.is_file() else None
        if saved is not None and saved.get("identity") == identity:
            self.table = saved["table"]
            say(f"reference log-probabilities: {path} (computed before; {sum(map(len, self.table.values())):,} pairs)")
        else:
            say(f"computing the reference log-probabilities of {sum(map(len, sets.values())):,} pairs once "
                "(--precompute_ref) ...")
            for name, ds in sets.items():
                mine = Subset(ds, range(dist.rank, len(ds), dist.world_size))
                table = torch.zeros(len(ds), 2, dtype=torch.float64, device=dist.device)
                for batch in DataLoader(mine, batch_size=batch_size, collate_fn=collate):
                    c, r = self.logps(policy, batch, autocast)
                    table[batch["index"].to(dist.device)] = torch.stack([c, r], 1).double()
                self.table[name] = all_reduce_sum(table, dist).float().cpu()
            if dist.is_main:
                atomic_torch_save({"identity": identity, "table": self.table}, path)
            say(f"reference log-probabilities computed once for {sum(map(len, sets.values())):,} pairs: {path}")
        self.model = self.start = None


def dataset_digest(ds):
    """A hash of a PreferenceDataset's tokens: the samples a table of reference log-probabilities is for."""
    h = hashlib.blake2b(digest_size=16)
    for sample in ds.samples:
        for t in sample:
            h.update(t.numpy().tobytes())
            h.update(b"|")
    return h.hexdigest()


class PreferenceObjective:
    """What trainer/loop.py asks of an objective, for preference pairs: accumulate (one optimizer step's
    forward and backward) and validate. The loss is the mean over the step's pairs (all micro-batches, all
    ranks), plus rpo_alpha times the mean NLL per chosen-answer token of the step."""

    def __init__(self, loss, reference_kind, rpo_alpha=0.0):
        self.loss, self.kind, self.rpo_alpha, self.reference = loss, reference_kind, rpo_alpha, None

    def prepare(self, run, model, train_set, val_set, collate, dtype, autocast):
        """The reference, made from the model as it starts (before a resumed run loads its weights), its
        log-probabilities computed once with --precompute_ref. SimPO has none."""
        if not self.loss.needs_reference:
            return
        self.reference = Reference(model, self.kind, dtype, run.cfg.precompute_ref)
        sets = {"train": train_set, **({"val": val_set} if val_set is not None and len(val_set) else {})}
        identity = {"parent_sha256": run.meta.get("parent_sha256"), "reference": self.kind, "dtype": str(dtype),
                    "from_lora_sha256": run.meta.get("from_lora_sha256")}
        self.reference.prepare(model, sets, collate, run.cfg.batch_size, autocast, run.dist,
                               layout.state_dir(run.out, run.name), identity, run.say)

    def pair_terms(self, model, batch, autocast, split, dev):
        """-> (per-pair losses, sums row for SUMS minus loss, chosen NLL sum, chosen token count, aux loss)."""
        ref_c = ref_r = None
        if self.loss.needs_reference:          # first: a continued adapter's reference swaps weights in and out
            ref_c, ref_r = (x.to(dev, torch.float32) for x in self.reference.logps(model, batch, autocast, split))
        with autocast:
            logps, counts, res = answer_logps(model, batch["input_ids"].to(dev), batch["labels"].to(dev))
        pol_c, pol_r = logps.chunk(2)
        n_c, n_r = counts.chunk(2)
        losses, rew_c, rew_r = self.loss(pol_c, pol_r, n_c, n_r, ref_c, ref_r)
        sums = torch.stack([rew_c.sum(), rew_r.sum(), (rew_c > rew_r).float().sum(),
                            pol_c.detach().sum(), pol_r.detach().sum()]).double()
        return losses, sums, -pol_c.sum(), n_c.sum(), res.aux_loss

    def accumulate(self, ddp_model, micro, dist, scaler, autocast):
        """-> (stats [summed loss, real tokens], global pair count, metric sums {name: sum over pairs})."""
        dev = dist.device
        counts = torch.tensor([sum(len(b["index"]) for b in micro),
                               sum(int((b["labels"][:len(b["index"]), 1:] != -100).sum()) for b in micro)],
                              dtype=torch.float64, device=dev)
        n_pairs, n_tok = all_reduce_sum(counts, dist).tolist()
        sums = torch.zeros(len(SUMS) + 1, dtype=torch.float64, device=dev)
        for i, batch in enumerate(micro):
            sync = i == len(micro) - 1 or not dist.enabled
            with torch.enable_grad(), (contextlib.nullcontext() if sync else ddp_model.no_sync()):
                losses, s, nll, _, aux = self.pair_terms(ddp_model, batch, autocast, "train", dev)
                loss = losses.sum() * (dist.world_size / n_pairs)
                if self.rpo_alpha:
                    loss = loss + self.rpo_alpha * nll * (dist.world_size / max(n_tok, 1))
                if aux is not None:
                    loss = loss + aux / len(micro)
                scaler.scale(loss).backward()
            sums[0] += losses.detach().sum().double()
            sums[1:len(SUMS)] += s
            sums[len(SUMS)] += nll.detach().double()
        tokens = torch.tensor([sum(b["attention_mask"].sum().item() for b in micro)], dtype=torch.float64, device=dev)
        sums = all_reduce_sum(torch.cat([sums, tokens]), dist)          # one collective for the sums and tokens
        metrics = self.metric_sums(sums[:-1], n_pairs, n_tok)
        return torch.tensor([metrics["loss"], sums[-1].item()], dtype=torch.float64, device=dev), n_pairs, metrics

    def metric_sums(self, sums, n_pairs, n_tok):
        """The step's sums over pairs -> {name: sum}: the loss (with the RPO term, as trained), each SUMS
        entry, margin, and the chosen answers' NLL per token (as a sum over pairs, like the rest)."""
        out = dict(zip(SUMS, sums[:len(SUMS)].tolist()))
        nll = sums[len(SUMS)].item() / max(n_tok, 1)
        if self.rpo_alpha:
            out["loss"] += self.rpo_alpha * nll * n_pairs
        out["margin"] = out["reward_chosen"] - out["reward_rejected"]
        out["nll_chosen"] = nll * n_pairs
        return out

    @torch.no_grad()
    def validate(self, model, loader, dist, autocast, max_batches=0):
        """-> (validation loss, {metric: mean}) over (at most max_batches of) the loader, all ranks."""
        model.eval()
        sums = torch.zeros(len(SUMS) + 3, dtype=torch.float64, device=dist.device)
        for batch in itertools.islice(loader, max_batches or None):
            losses, s, nll, n_c, _ = self.pair_terms(model, batch, autocast, "val", dist.device)
            sums[0] += losses.sum().double()
            sums[1:len(SUMS)] += s
            sums[len(SUMS)] += nll.double()
            sums[len(SUMS) + 1] += len(losses)
            sums[len(SUMS) + 2] += n_c.double()
        model.train()
        all_reduce_sum(sums, dist)
        n_pairs = max(sums[len(SUMS) + 1].item(), 1)
        metrics = {k: v / n_pairs for k, v in self.metric_sums(sums, n_pairs, sums[len(SUMS) + 2].item()).items()}
        return metrics.pop("loss"), metrics

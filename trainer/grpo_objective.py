"""The objective trainer/loop.py runs for trainer/train_grpo.py: each optimizer step samples G completions
of each of its prompts (trainer/rollout.py), scores them with the run's rewards (rewards/, passed in as a
function), turns the rewards into group advantages and takes the policy loss (trainer/grpo.py) over the
completion tokens, against the reference when --beta > 0.

--num_iterations k: a rollout trains k optimizer steps (the loader gives the same prompts k times:
trainer/distributed.ResumableSampler's repeat), its log-probabilities at sampling time the old policy's; the
rollout is kept in the run's training state, so a run resumed between two of its steps goes on with it.
--dynamic_sampling: a group whose rewards are all equal teaches nothing; its prompt is sampled again (new
seeds, up to RESAMPLE times) and dropped when it stays flat.

Library module:
    run.objective = GRPOObjective(score, settings, loss, tokenizer)
"""
import contextlib
import hashlib
import itertools
import time
from dataclasses import asdict, dataclass

import torch

from model.lora import unwrap_model
from trainer.distributed import all_reduce_sum
from trainer.grpo import PolicyLoss, group_advantages, group_std
from trainer.preference import Reference
from trainer.rollout import Groups, sample_groups, scored, token_logps

RESAMPLE = 3                       # --dynamic_sampling: new tries of a prompt whose group is flat


@dataclass
class Settings:
    num_generations: int = 8
    max_new_tokens: int = 64
    temperature: float = 1.0
    scale_rewards: str = "group"
    num_iterations: int = 1
    dynamic_sampling: bool = False
    reference_kind: str = "copy"   # a LoRA's: "adapter_off"
    seed: int = 0


def row_seed(*parts):
    """A sampling seed from (run seed, step, the prompt's index in the data, its completion, try): a resumed
    run samples what the uninterrupted one did, whatever the global generators hold, and a prompt's seeds do
    not depend on which process or micro-batch it fell to."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=7).digest(), "big")


class GRPOObjective:
    """What trainer/loop.py asks of an objective (prepare, accumulate, validate), plus state_dict and
    load_state_dict: the rollout a --num_iterations window is still training on."""

    def __init__(self, score, settings, loss, tokenizer):
        self.score, self.s, self.loss, self.tok = score, settings, loss, tokenizer
        self.reference, self.run, self.step, self.cache = None, None, 0, None

    def prepare(self, run, model, train_set, val_set, collate, dtype, autocast):
        self.run = run
        if self.loss.beta:                       # --beta 0 keeps no reference at all
            self.reference = Reference(model, self.s.reference_kind, dtype, precompute=False)

    def state_dict(self):
        """The step count and the rollout in use, as plain lists, numbers and tensors (weights_only loads it)."""
        cache = [{**p, "groups": asdict(p["groups"])} for p in self.cache] if self.cache else None
        return {"step": self.step, "cache": cache}

    def load_state_dict(self, state):
        """A resumed run's (without a cache: another process count; a new rollout at the next step)."""
        if state:
            self.step = state["step"]
            self.cache = [{**p, "groups": Groups(**p["groups"])} for p in state["cache"]] if state["cache"] else None

    # -- a rollout -------------------------------------------------------------------------------------
    def sample(self, model, items, seeds, autocast, G=None, temperature=None):
        """G completions of each item's prompt -> (Groups, their texts, their records for the rewards)."""
        G = G or self.s.num_generations
        groups = sample_groups(model, [it["ids"] for it in items], G, self.s.max_new_tokens,
                               self.s.temperature if temperature is None else temperature, self.tok.stop_ids,
                               self.tok.pad_id, seeds, autocast)
        return (groups, *scored(groups, [it["record"] for it in items], self.s.max_new_tokens, self.tok))

    def roll(self, model, items, autocast):
        """One micro-batch's rollout -> dict of its groups' tensors, rewards and counts (groups flat after
        --dynamic_sampling's tries are dropped)."""
        G = self.s.num_generations
        seeds = [row_seed(self.s.seed, self.step, it["index"], g, 0) for it in items for g in range(G)]
        groups, texts, records = self.sample(model, items, seeds, autocast)
        total, each = self.score(texts, records)
        flat = (group_std(total, G) == 0).view(-1, G)[:, 0]
        # what was sampled first (the metrics: an all-right group that --dynamic_sampling drops still counts)
        seen = [len(total), total.sum().item(), group_std(total, G).sum().item(), flat.sum().item(), len(items),
                *[each[k].sum().item() for k in sorted(each)], *[group_std(each[k], G).sum().item() for k in sorted(each)]]
        seconds = groups.seconds
        for attempt in range(1, RESAMPLE + 1 if self.s.dynamic_sampling else 1):
            redo = flat.nonzero()[:, 0].tolist()
            if not redo:
                break
            seeds = [row_seed(self.s.seed, self.step, items[i]["index"], g, attempt) for i in redo for g in range(G)]
            again, t2, r2 = self.sample(model, [items[i] for i in redo], seeds, autocast)
            seconds += again.seconds
            tot2, each2 = self.score(t2, r2)
            for j, i in enumerate(redo):
                if group_std(tot2[j * G:(j + 1) * G], G)[0] > 0:
                    rows = slice(i * G, (i + 1) * G)
                    for name in ("prompt_ids", "completion_ids", "sampled_logps", "finished"):
                        getattr(groups, name)[rows] = getattr(again, name)[j * G:(j + 1) * G]
                    total[rows] = tot2[j * G:(j + 1) * G]
                    for name in each:
                        each[name][rows] = each2[name][j * G:(j + 1) * G]
                    flat[i] = False
        keep = [r for r in range(len(total)) if not (self.s.dynamic_sampling and flat[r // G])]
        pick = lambda xs: [xs[r] for r in keep]            # noqa: E731
        for name in ("prompt_ids", "completion_ids", "sampled_logps", "finished"):
            setattr(groups, name, pick(getattr(groups, name)))
        idx = torch.tensor(keep, dtype=torch.long)
        return {"groups": groups, "total": total[idx], "each": {n: v[idx] for n, v in each.items()},
                "seen": seen, "names": sorted(each), "seconds": seconds}

    @torch.no_grad()
    def reference_logps(self, model, groups, autocast):
        args = (groups, self.s.temperature, self.tok.pad_id)
        if self.reference.model is not None:
            with autocast:
                return token_logps(self.reference.model, *args)[0]
        m = unwrap_model(model)
        was = m.training
        m.eval()
        with self.reference.as_reference(m), autocast:
            out = token_logps(m, *args)[0]
        m.train(was)
        return out

    def rollout(self, model, micro, dist, autocast):
        """The step's rollouts, advantages (over the whole step: scale "batch" takes every process's
        rewards) and reference log-probabilities -> a list of per-micro-batch dicts."""
        parts = [self.roll(model, items, autocast) for items in micro]
        G, batch_std = self.s.num_generations, None
        if self.s.scale_rewards == "batch":
            r = torch.cat([p["total"] for p in parts])
            s = all_reduce_sum(torch.tensor([len(r), r.sum().item(), (r * r).sum().item()], dtype=torch.float64,
                                            device=dist.device), dist).cpu()
            batch_std = ((s[2] - s[1] ** 2 / s[0]) / (s[0] - 1)).clamp(min=0).sqrt() if s[0] > 1 else torch.tensor(0.0)
        for p in parts:
            p["advantages"], p["std"] = group_advantages(p["total"], G, self.s.scale_rewards, batch_std) \
                if len(p["total"]) else (p["total"], p["total"])
            p["tensors"] = p["groups"].tensors(self.tok.pad_id) if len(p["total"]) else None
            start, p["ref_seconds"] = time.perf_counter(), 0.0
            if p["tensors"] is not None and self.reference is not None:
                p["tensors"]["ref_logps"] = self.reference_logps(model, p["groups"], autocast).cpu()
                p["ref_seconds"] = time.perf_counter() - start
        return parts

    # -- the optimizer step -----------------------------------------------------------------------------
    def accumulate(self, ddp_model, micro, dist, scaler, autocast):
        """-> (stats [loss x completions, tokens], the step's completion count, metric sums over completions)."""
        dev = dist.device
        fresh = self.cache is None or self.step % self.s.num_iterations == 0
        if fresh:
            self.cache = self.rollout(ddp_model, micro, dist, autocast)
        parts, start = self.cache, time.perf_counter()
        live = [p for p in parts if p["tensors"] is not None]
        local = torch.tensor([sum(len(p["total"]) for p in parts),
                              sum(float(p["tensors"]["completion_mask"].sum()) for p in live)], dtype=torch.float64)
        n_seqs, n_tok = all_reduce_sum(local.to(dev), dist).tolist()
        sums = torch.zeros(4, dtype=torch.float64, device=dev)   # loss, KL, clipped tokens, |logp - sampled logp|
        for i, p in enumerate(live):
            t = {k: v.to(dev) for k, v in p["tensors"].items() if torch.is_tensor(v)}
            sync = i == len(live) - 1 or not dist.enabled
            with torch.enable_grad(), (contextlib.nullcontext() if sync else ddp_model.no_sync()):
                with autocast:
                    logps, aux = token_logps(ddp_model, p["groups"], self.s.temperature, self.tok.pad_id)
                if fresh:       # the old policy is this one: its log-probabilities, detached, as TRL takes them
                    sampled, t["old_logps"] = t["old_logps"], logps.detach()
                    p["tensors"]["old_logps"] = t["old_logps"].cpu()    # for the window's later steps
                    gap = ((logps.detach() - sampled).abs().double() * t["completion_mask"]).sum()
                per_token, kl, clipped = self.loss.per_token(logps, t["old_logps"], p["advantages"].to(dev, torch.float32),
                                                             t.get("ref_logps"))
                part = self.loss.aggregate(per_token, t["completion_mask"], n_seqs, n_tok)
                loss = part * dist.world_size + (aux / len(live) if aux is not None else 0)
                scaler.scale(loss).backward()
            mask = t["completion_mask"].to(torch.float64)
            sums += torch.stack([part.detach().double(), (kl.detach().double() * mask).sum() if kl is not None
                                 else mask.new_zeros(()), (clipped.double() * mask).sum(),
                                 gap if fresh else mask.new_zeros(())])
        if not live and n_seqs > 0 and dist.enabled:      # the others' backward waits for this process's
            with autocast:
                (ddp_model(torch.zeros((1, 1), dtype=torch.long, device=dev)).logits.sum() * 0).backward()
        self.step += 1
        out = self.step_metrics(parts, live, sums, n_seqs, n_tok, time.perf_counter() - start, dist, fresh)
        for p in parts:                  # a later step of the window samples nothing and asks no reference
            p["seconds"] = p["ref_seconds"] = 0.0
        return out

    def step_metrics(self, parts, live, sums, n_seqs, n_tok, update_s, dist, fresh):
        """-> (stats, weight, metric sums): every metric a mean over the completions sampled this step (all
        processes; the rewards as first sampled, before --dynamic_sampling's tries), times their count."""
        names = parts[0]["names"] if parts else []
        seen = [sum(p["seen"][i] for p in parts) for i in range(5 + 2 * len(names))]
        local = [sum(p["seconds"] for p in parts), update_s, sum(p["ref_seconds"] for p in parts),
                 sum(float(p["tensors"]["attention_mask"].sum()) for p in live), *seen]
        g = all_reduce_sum(torch.cat([sums, torch.tensor(local, dtype=torch.float64, device=sums.device)]), dist).tolist()
        loss, kl, clipped, gap, roll_s, upd_s, ref_s, tokens, rows, reward, std, flat, prompts = g[:13]
        n, w = max(rows, 1), dist.world_size
        means = {"reward": reward / n, "reward_std": std / n, "zero_std_share": flat / max(prompts, 1),
                 **{f"reward_{k}": v / n for k, v in zip(names, g[13:])},
                 **{f"reward_{k}_std": v / n for k, v in zip(names, g[13 + len(names):])},
                 "completion_length": n_tok / max(n_seqs, 1),
                 "clip_ratio": clipped / max(n_tok, 1), "rollout_s": roll_s / w, "update_s": upd_s / w}
        if fresh:
            means["sampling_logp_gap"] = gap / max(n_tok, 1)
        if self.loss.beta:
            means.update(kl=kl / max(n_tok, 1), reference_s=ref_s / w)
        stats = torch.tensor([loss * rows, tokens], dtype=torch.float64, device=sums.device)
        return stats, rows, {k: v * rows for k, v in means.items()}

    @torch.no_grad()
    def validate(self, model, loader, dist, autocast, max_batches=0):
        """Greedy answers to the validation prompts -> (minus the mean weighted reward, {reward, reward_NAME,
        completion_length}: means), all processes together."""
        sums = None
        for items in itertools.islice(loader, max_batches or None):
            groups, texts, records = self.sample(model, items, [0] * len(items), autocast, G=1, temperature=0.0)
            total, each = self.score(texts, records)
            row = torch.tensor([len(texts), total.sum().item(), sum(map(len, groups.completion_ids)),
                                *[each[k].sum().item() for k in sorted(each)]], dtype=torch.float64)
            names, sums = sorted(each), row if sums is None else sums + row
        if sums is None:
            return 0.0, {}
        sums = all_reduce_sum(sums.to(dist.device), dist).tolist()
        n = max(sums[0], 1)
        return -sums[1] / n, {"reward": sums[1] / n, **{f"reward_{k}": v / n for k, v in zip(names, sums[3:])},
                              "completion_length": sums[2] / n}

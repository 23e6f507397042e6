"""DDP plumbing from the torchrun environment (RANK, LOCAL_RANK, WORLD_SIZE); a single process when absent.

Library module; a run on N processes of one machine:
    torchrun --nproc_per_node 2 trainer/train_full_sft.py
"""
import contextlib
import datetime
import itertools
import os
import random
import time
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch.utils.data import DistributedSampler, Sampler

from core.errors import UserError


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


def setup_distributed(device="", timeout_s=600):
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU) and pick this rank's device.
    A collective that waits longer than timeout_s for a stuck rank fails (see collective_timeout)."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if not device:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if world_size > 1 or dev.index is None:
            dev = torch.device("cuda", local_rank if world_size > 1 else 0)
        torch.cuda.set_device(dev)
    if world_size > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size,
                                 timeout=datetime.timedelta(seconds=timeout_s),
                                 **({"device_id": dev} if dev.type == "cuda" else {}))
    return Dist(rank, local_rank, world_size, dev)


def seed_everything(seed):
    """The same seed on every rank: identical initialisation (DDP broadcasts rank 0's weights anyway)."""
    random.seed(seed)
    torch.manual_seed(seed)


def all_reduce_sum(t, dist):
    """Sum a tensor over ranks in place (no-op in a single process); returns it."""
    if dist.enabled:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_gather_objects(obj, dist):
    """[obj of rank 0, obj of rank 1, ...] (a one-element list in a single process)."""
    if not dist.enabled:
        return [obj]
    out = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


def rank0_clock(start, dist):
    """Seconds since `start` as rank 0 measures them, the same number on every rank (so that all ranks
    follow one learning-rate schedule and stop at the same step under a time limit)."""
    elapsed = torch.tensor([time.time() - start], dtype=torch.float64)
    if dist.enabled:
        elapsed = elapsed.to(dist.device)
        tdist.broadcast(elapsed, src=0)
    return float(elapsed.item())


def barrier(dist):
    if dist.enabled:
        tdist.barrier()


@contextlib.contextmanager
def collective_timeout(dist, timeout_s):
    """A collective that timed out (a rank stopped or froze) ends the job with one line, not a traceback."""
    try:
        yield
    except RuntimeError as e:   # gloo and nccl raise RuntimeError (DistBackendError) subclasses
        text = str(e).lower()
        if not dist.enabled or not ("timed out" in text or "timeout" in text):
            raise
        raise UserError(f"rank {dist.rank}: another process of the DDP group did not answer within "
                        f"--ddp_timeout {timeout_s} s (a rank stopped or is stuck); the job stopped, the last "
                        "save is the newest checkpoint and out/state/ (resume with --resume)") from None


def cleanup_distributed():
    if tdist.is_initialized():
        tdist.destroy_process_group()


class ResumableSampler(Sampler):
    """DistributedSampler's order for an epoch (seeded by seed + epoch; rank r takes every world_size-th
    sample), optionally starting `skip` samples in, so a resumed run sees exactly what the interrupted
    one had not seen yet. group (the micro-batch size; 0 = off) batches samples of similar length together
    (group_by_length): the same samples each epoch, in an order that is as seeded and as resumable.
    repeat = (k, block): each block of `block` samples (one optimizer step's) comes k times in a row (a
    GRPO rollout trains k steps: --num_iterations), a last partial block left out; len() counts the repeats."""

    def __init__(self, dataset, dist, shuffle, seed, group=0, repeat=(1, 1)):
        self.inner = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank,
                                        shuffle=shuffle, seed=seed)
        self.skip, self.seed, self.epoch, self.group = 0, seed, 0, group
        self.repeat, self.block = repeat
        self.lengths = [len(s[0]) for s in dataset.samples] if group else None

    def set_epoch(self, epoch, skip=0):
        self.inner.set_epoch(epoch)
        self.skip, self.epoch = skip, epoch

    def __iter__(self):
        order = list(self.inner)
        if self.group:
            order = group_by_length(order, self.lengths, self.group, random.Random(self.seed + self.epoch))
        if self.repeat > 1:
            order = [j for i in range(0, self.total // self.repeat, self.block) for _ in range(self.repeat)
                     for j in order[i:i + self.block]]
        return itertools.islice(iter(order), self.skip, None)

    @property
    def total(self):
        """The samples of one epoch, repeats counted."""
        n = len(self.inner)
        return n if self.repeat == 1 else max(n - n % self.block, min(n, self.block)) * self.repeat

    def __len__(self):
        return max(0, self.total - self.skip)


def group_by_length(order, lengths, batch, rng, mega=50):
    """Hugging Face Trainer's group_by_length: the shuffled order cut into mega-batches of mega * batch
    samples, each sorted by length (longest first) and cut into batches; the batches then go in a seeded
    random order, the longest first (an out-of-memory shows at the first step) and a short last batch last
    (every other batch stays whole, as the loader cuts them). Padding shrinks to the spread within a batch."""
    batches = []
    for i in range(0, len(order), mega * batch):
        chunk = sorted(order[i:i + mega * batch], key=lambda j: -lengths[j])
        batches += [chunk[k:k + batch] for k in range(0, len(chunk), batch)]
    short = [b for b in batches if len(b) < batch]
    full = [b for b in batches if len(b) == batch]
    if not full:
        return [j for b in short for j in b]
    first = max(range(len(full)), key=lambda k: lengths[full[k][0]])
    rest = full[:first] + full[first + 1:]
    rng.shuffle(rest)
    return [j for b in [full[first]] + rest + short for j in b]


def rng_state():
    """This process's random generators (python, torch, CUDA), for an exact resume."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

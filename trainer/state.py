"""The resumable training state of a run: out/state/{run}/step_N.pth, written with every periodic save and
read back by --resume, so that a resumed run ends with the same weights as an uninterrupted one.

A state holds the parameters that train (the rest come from the base checkpoint), the optimizer and
GradScaler states, step and tokens_seen (they fix the schedule and the data position), the RNG state of
every rank, world_size, the base's sha256 and the train config. Only the newest --keep_last stay.

Library module; trainer/loop.py uses it:
    state = TrainState(paths.state_dir(out, run_name), cfg, meta, dist).load(model)
    state.load_optimizer(optimizer, scaler); ...; state.load_rng()
    last_saved = state.save(model, optimizer, scaler, save_model, log.summary())
"""
from pathlib import Path

from model.checkpoint import atomic_torch_save, read_pth
from model.errors import UserError
from trainer.distributed import all_gather_objects, barrier, rng_state, set_rng_state


def list_states(folder):
    """The states in folder, oldest first (by step number: step_10 comes after step_9)."""
    return sorted(Path(folder).glob("step_*.pth"), key=lambda p: int(p.stem.split("_")[1]))


class TrainState:
    """Where a run is (step, tokens_seen) and the files that let it continue from there."""

    def __init__(self, folder, cfg, meta, dist):
        self.folder, self.cfg, self.meta, self.dist = Path(folder), cfg, meta, dist
        self.step, self.tokens_seen, self.resumed = 0, 0, None

    def save(self, model, optimizer, scaler, save_model, run_stats, final=False):
        """save_model(model, info) on rank 0 and, unless final, a resumable state beside it. Every rank calls
        it (the RNG states are gathered). -> the path save_model returned (None off rank 0)."""
        info = {**self.meta, "step": self.step, "tokens_seen": self.tokens_seen, "train_config": self.cfg.to_dict(),
                **run_stats}
        rngs = all_gather_objects(rng_state(), self.dist)         # a collective: every rank takes part
        saved = None
        if self.dist.is_main:
            saved = save_model(model, info)
            if not final:
                atomic_torch_save({"params": {n: p.detach().cpu() for n, p in model.named_parameters()
                                              if p.requires_grad},
                                   "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                   "step": self.step, "tokens_seen": self.tokens_seen, "rng": rngs,
                                   "world_size": self.dist.world_size, "parent_sha256": self.meta.get("parent_sha256"),
                                   "train_config": self.cfg.to_dict()},
                                  self.folder / f"step_{self.step}.pth")
                for old in list_states(self.folder)[:-max(1, self.cfg.keep_last)]:
                    old.unlink()
        barrier(self.dist)
        return saved

    def load(self, model):
        """With --resume: the newest state's trainable weights, step and tokens_seen, once it is checked to
        belong to this run. Before the model is wrapped in DDP and before the optimizer exists. -> self."""
        states = list_states(self.folder) if self.cfg.resume else []
        if not states:
            if self.cfg.resume and self.dist.is_main:
                print(f"no training state in {self.folder}; starting from step 0")
            return self
        path, resumed = states[-1], read_pth(states[-1])
        then_sha, now_sha = resumed.get("parent_sha256"), self.meta.get("parent_sha256")
        if then_sha != now_sha:
            raise UserError(f"{path}: this training state was made from another base checkpoint (sha256 "
                            f"{str(then_sha)[:12]}, now {str(now_sha)[:12]}); "
                            "drop --resume or use the base it was trained from")
        params = dict(model.named_parameters())
        for name, value in resumed["params"].items():
            if name not in params:
                raise UserError(f"{path}: parameter {name} does not exist in this model; drop --resume")
            params[name].data.copy_(value)
        self.step, self.tokens_seen, self.resumed = resumed["step"], resumed["tokens_seen"], resumed
        then = resumed["train_config"]
        if (then["batch_size"], then["accumulation_steps"], resumed["world_size"]) != \
                (self.cfg.batch_size, self.cfg.accumulation_steps, self.dist.world_size) and self.dist.is_main:
            print("warning: batch size, accumulation or process count differ from the interrupted run; "
                  "the data position is approximate")
        return self

    def load_optimizer(self, optimizer, scaler):
        if self.resumed:
            optimizer.load_state_dict(self.resumed["optimizer"])
            scaler.load_state_dict(self.resumed["scaler"])

    def load_rng(self):
        """The interrupted run's random generators; call it last, so that nothing after draws from them
        before the first step. A run on another number of processes gets rank 0's on every rank."""
        if self.resumed:
            rngs = self.resumed["rng"]
            set_rng_state(rngs[self.dist.rank] if len(rngs) == self.dist.world_size else rngs[0])

"""The resumable training state of a run: out/state/{run}/step_N.pth, written with every periodic save and
read back by --resume, so that a resumed run ends with the same weights as an uninterrupted one.

A state holds the parameters that train (the rest come from the base checkpoint), the optimizer and
GradScaler states, step and tokens_seen (they fix the schedule and the data position), the RNG state of
every rank, world_size, the base's sha256, the train config, and what the run is (model config, LoRA
settings, training data file's size and sha256): --resume refuses a state of another run. Only the
newest --keep_last stay.

Library module; trainer/loop.py uses it:
    state = TrainState(layout.state_dir(out, run_name), cfg, meta, dist).load(model)
    state.load_optimizer(optimizer, scaler); ...; state.load_rng()
    last_saved = state.save(model, optimizer, scaler, save_model, log.summary())
"""
from pathlib import Path

from checkpoint import layout
from checkpoint.pth import atomic_torch_save, file_sha256, read_pth
from core.errors import UserError
from trainer.distributed import all_gather_objects, barrier, rng_state, set_rng_state


# the flags that decide which parameters a LoRA run trains and how
LORA_FLAGS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "use_rslora")
# the flags that decide what the samples are and which of them train (the split): a resume must keep them
DATA_FLAGS = ("max_seq_len", "val_ratio", "val_data", "seed", "loss_on", "system_prompt", "skip_bad",
              "from_lora",          # a DPO run's --from_lora: the adapter it continues is its reference
              "reward", "num_iterations")   # a GRPO run's scoring and its rollouts' reuse


class TrainState:
    """Where a run is (step, tokens_seen) and the files that let it continue from there."""

    def __init__(self, folder, cfg, meta, dist, objective=None):
        self.folder, self.cfg, self.meta, self.dist = Path(folder), cfg, meta, dist
        # an objective with a state of its own (GRPO's rollout in use) saves and loads it with the run's
        self.objective = objective if hasattr(objective, "state_dict") else None
        self.step, self.tokens_seen, self.resumed = 0, 0, None
        self.identity = None

    def run_identity(self, model):
        """What a state must match to be resumed: model config, LoRA settings, the training data file."""
        if self.identity is None:
            data = Path(self.cfg.data_path)
            self.identity = {"model_config": model.config.to_dict(),
                             "lora": {k: getattr(self.cfg, k) for k in LORA_FLAGS},
                             "data_flags": {k: getattr(self.cfg, k) for k in DATA_FLAGS},
                             "data": {"path": str(data), "size": data.stat().st_size, "sha256": file_sha256(data)}}
        return self.identity

    def save(self, model, optimizer, scaler, save_model, run_stats, final=False):
        """save_model(model, info) on rank 0 and, unless final, a resumable state beside it. Every rank calls
        it (the RNG states are gathered). -> the path save_model returned (None off rank 0)."""
        info = {**self.meta, "step": self.step, "tokens_seen": self.tokens_seen, "train_config": self.cfg.to_dict(),
                **run_stats}
        rngs = all_gather_objects(rng_state(), self.dist)         # a collective: every rank takes part
        objective = all_gather_objects(self.objective.state_dict(), self.dist) if self.objective else None
        saved = None
        if self.dist.is_main:
            saved = save_model(model, info)
            if not final:
                atomic_torch_save({"params": {n: p.detach().cpu() for n, p in model.named_parameters()
                                              if p.requires_grad},
                                   "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                   "step": self.step, "tokens_seen": self.tokens_seen, "rng": rngs,
                                   "world_size": self.dist.world_size, "parent_sha256": self.meta.get("parent_sha256"),
                                   "train_config": self.cfg.to_dict(), "run": self.run_identity(model),
                                   "objective": objective},
                                  layout.state_file(self.folder, self.step))
                for old in layout.list_state_files(self.folder)[:-max(1, self.cfg.keep_last)]:
                    old.unlink()
        barrier(self.dist)
        return saved

    def load(self, model):
        """With --resume: the newest state's trainable weights, step and tokens_seen, once it is checked to
        belong to this run. Before the model is wrapped in DDP and before the optimizer exists. -> self."""
        states = layout.list_state_files(self.folder) if self.cfg.resume else []
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
        self.check_same_run(path, resumed, model)
        params = dict(model.named_parameters())
        for name, value in resumed["params"].items():
            if name not in params:
                raise UserError(f"{path}: parameter {name} does not exist in this model; drop --resume")
            if tuple(value.shape) != tuple(params[name].shape):
                raise UserError(f"{path}: parameter {name} has shape {tuple(value.shape)} there and "
                                f"{tuple(params[name].shape)} in this model; drop --resume or restore the settings")
            params[name].data.copy_(value)
        self.step, self.tokens_seen, self.resumed = resumed["step"], resumed["tokens_seen"], resumed
        if self.objective and resumed.get("objective"):
            mine = resumed["objective"]
            self.objective.load_state_dict(mine[self.dist.rank] if len(mine) == self.dist.world_size
                                          else {"step": self.step, "cache": None})
        then = resumed["train_config"]
        if (then["batch_size"], then["accumulation_steps"], resumed["world_size"]) != \
                (self.cfg.batch_size, self.cfg.accumulation_steps, self.dist.world_size) and self.dist.is_main:
            print("warning: batch size, accumulation or process count differ from the interrupted run; "
                  "the data position is approximate")
        return self

    def check_same_run(self, path, resumed, model):
        """One line naming what changed since the state was saved (states older than this check have no
        record and are taken as they are)."""
        then, now = resumed.get("run"), self.run_identity(model)
        if not then:
            return
        fix = "drop --resume to start over, or restore the setting"
        a, b = then["model_config"], now["model_config"]
        changed = [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if changed:
            raise UserError(f"{path}: the model config changed since this state was saved "
                            f"({'; '.join(changed[:4])}); {fix}")
        changed = [f"--{k} {then['lora'][k]} -> {now['lora'][k]}" for k in LORA_FLAGS
                   if then["lora"].get(k) != now["lora"][k]]
        if changed:
            raise UserError(f"{path}: the LoRA settings changed since this state was saved "
                            f"({'; '.join(changed)}); {fix}")
        changed = [f"--{k} {then['data_flags'][k]!r} -> {now['data_flags'][k]!r}" for k in DATA_FLAGS
                   if k in then.get("data_flags", {}) and then["data_flags"][k] != now["data_flags"][k]]
        if changed:
            raise UserError(f"{path}: the settings that shape the data changed since this state was saved "
                            f"({'; '.join(changed)}); {fix}")
        a, b = then["data"], now["data"]
        if (a["size"], a["sha256"]) != (b["size"], b["sha256"]):
            what = "another file" if a["path"] != b["path"] else "a file whose contents changed"
            raise UserError(f"{path}: this state was trained on {a['path']} ({a['size']:,} bytes, sha256 "
                            f"{a['sha256'][:12]}); --data_path is now {what} ({b['path']}, {b['size']:,} bytes, "
                            f"sha256 {b['sha256'][:12]}); {fix}")

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

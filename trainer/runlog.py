"""The run log of a training run: THE log-line format, out/logs/{run}.jsonl, the tqdm bar, wandb and the
loss-curve PNG. No torch here, so plotting needs none (scripts/plot_runs.py overlays several runs).

Library module; trainer/loop.py drives it, on every rank (only rank 0 writes or prints):
    log = RunLog(out, run_name, cfg, total, (step, tokens_seen), dist.is_main, resumed, header="run ...")
    log.step_done(step, epoch, loss_sum, n_targets, step_loss, lr, tokens_seen, metrics)
    log.record_val(step, val_loss, metrics)
    log.close_bar(); ...; log.close()          # the PNG next to the jsonl, wandb.finish()
"""
import json
import sys
import time
from collections import deque
from pathlib import Path

from tqdm import tqdm

from checkpoint import layout
from core.atomic import atomic_path, temp_path, write_text


def format_eta(seconds):
    s = int(seconds)
    return f"{s}s" if s < 60 else f"{s // 60}m" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


# the objective's metrics a log line shows (all of them go into the jsonl row): a DPO run's reward
# accuracy and margin (trainer/preference.py), a distillation run's KL (trainer/distill.py), a GRPO run's
# mean reward and KL (trainer/grpo_objective.py)
SHOWN = {"reward": "reward", "accuracy": "acc", "margin": "margin", "kl": "kl"}


def log_line(step, total, loss=None, lr=None, tok_per_s=None, eta=None, val_loss=None, metrics=None, prefix=""):
    """THE log-line format: `step 100/2000 | loss 2.1234 | lr 3.0e-04 | 52,000 tok/s | eta 3m`; a DPO
    run adds `| acc 0.750 | margin 0.412` (prefix "val_" on a validation line)."""
    parts = [f"step {step}/{total}"]
    parts += [f"loss {loss:.4f}"] if loss is not None else []
    parts += [f"val_loss {val_loss:.4f}"] if val_loss is not None else []
    parts += [f"{prefix}{short} {metrics[k]:.3f}" for k, short in SHOWN.items() if k in (metrics or {})]
    parts += [f"lr {lr:.1e}"] if lr is not None else []
    parts += [f"{tok_per_s:,.0f} tok/s"] if tok_per_s is not None else []
    parts += [f"eta {format_eta(eta)}"] if eta is not None else []
    return " | ".join(parts)


def ema(values, weight):
    """Exponential moving average, debiased as TensorBoard's smoothing slider: the first points are not
    pulled towards 0. weight 0 returns the values unchanged."""
    out, last = [], 0.0
    for i, v in enumerate(values, 1):
        last = weight * last + (1 - weight) * v
        out.append(last / (1 - weight ** i))
    return out


def read_rows(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def run_stats(path):
    """(steps, last train loss, last val loss) of a run log (0, None, None when there is no log)."""
    steps, loss, val = 0, None, None
    for row in read_rows(path) if Path(path).is_file() else []:
        steps = max(steps, row.get("step", 0))
        loss, val = row.get("loss", loss), row.get("val_loss", val)
    return steps, loss, val


def build_figure(jsonl_paths, labels=None, smooth=0.9, metric=None):
    """The loss figure of out/logs/*.jsonl files: per run the train loss raw (thin, light) and, unless
    smooth is 0, its EMA with weight smooth (debiased), and the validation loss dashed with dots.
    Titled with the run's name (or "N runs"). metric: "loss", or "reward" (a GRPO run's mean reward and
    its validation's greedy one); None = reward where the logs have it, else loss. Returns the Figure."""
    import matplotlib          # not at the top: start-up time of every command that imports this module
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    names = labels or [Path(p).stem for p in jsonl_paths]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    runs = [read_rows(path) for path in jsonl_paths]
    metric = metric or ("reward" if any("reward" in r for rows in runs for r in rows) else "loss")
    for i, (name, rows) in enumerate(zip(names, runs)):
        train = [(r["step"], r[metric]) for r in rows if metric in r]
        val = [(r["step"], r[f"val_{metric}"]) for r in rows if f"val_{metric}" in r]
        color = colors[i % len(colors)]
        if train:
            steps, losses = zip(*train)
            if smooth:
                ax.plot(steps, losses, color=color, lw=0.8, alpha=0.3)
                ax.plot(steps, ema(losses, smooth), color=color, lw=1.8, label=f"{name} train (EMA {smooth:g})")
            else:
                ax.plot(steps, losses, color=color, lw=1.5, label=f"{name} train")
        if val:
            ax.plot(*zip(*val), "o--", color=color, label=f"{name} val" + (" (greedy)" if metric == "reward" else ""))
    ax.set(title=names[0] if len(names) == 1 else f"{len(names)} runs", xlabel="step",
           ylabel="loss per target token" if metric == "loss" else "mean reward")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_curves(jsonl_paths, png_path, labels=None, smooth=0.9, metric=None):
    """build_figure of out/logs/*.jsonl files -> one PNG."""
    import matplotlib.pyplot as plt   # not at the top: start-up time (see build_figure)
    fig = build_figure(jsonl_paths, labels, smooth, metric)
    # the temporary name has no .png suffix, so the format is given
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


class RunLog:
    """What a run reports: a line every cfg.log_interval steps (and at the last), each validation loss,
    the bar in between. Every rank keeps the loss window and the clocks; rank 0 alone prints and writes.

    THE train loss (log line, jsonl row, bar, summary) is train_loss(): the mean per target token over the
    last log_interval steps (fewer just after the start or a resume), never one batch's; so the row of a
    last step that is no multiple of log_interval still covers a whole interval."""

    def __init__(self, out, run_name, cfg, total, start, main, resumed=False, header=""):
        """start: (step, tokens_seen) the run begins at (not 0 for a resumed one)."""
        self.path, self.cfg, self.total, self.main = layout.log_path(out, run_name), cfg, total, main
        self.start_step, self.tokens_at_log = start
        self.val_loss, self.wandb, self.stopped, self.val_metrics = None, None, None, {}
        if main:
            print(header)
            # a new run starts a fresh log; a resumed one keeps the lines up to its step
            old = self.path.read_text(encoding="utf-8").splitlines() if resumed and self.path.exists() else []
            kept = [s for s in old if json.loads(s)["step"] <= self.start_step]
            config = json.dumps({"step": self.start_step, "config": cfg.to_dict()})     # what this run ran with
            # rows go to a temporary beside the log, which replaces the log at every save (publish): a run
            # that fails before its first save leaves the previous run's log, like its checkpoint, intact
            self.live = temp_path(self.path.with_name(self.path.name + ".live"))
            self.live.parent.mkdir(parents=True, exist_ok=True)
            self.live.write_text("".join(f"{s}\n" for s in kept + [config]), encoding="utf-8")
            if cfg.use_wandb:
                import wandb       # optional, and slow to import: only for --use_wandb
                wandb_dir = Path(out) / "wandb"
                wandb_dir.mkdir(parents=True, exist_ok=True)
                wandb.init(project=cfg.wandb_project, name=run_name, config=cfg.to_dict(), dir=str(wandb_dir))
                self.wandb = wandb
            self.bar = tqdm(total=total, initial=self.start_step, disable=not sys.stderr.isatty(),
                            dynamic_ncols=True, unit="step")
            self.emit = print if self.bar.disable else self.bar.write
        self.t0 = self.t_log = time.time()
        self.window = deque(maxlen=cfg.log_interval)    # (summed loss, target tokens, metric sums) of the last steps
        self.logged_step = self.start_step              # the step of the last line

    def record(self, row, line):
        """One row of the jsonl (and of wandb) and its line on the terminal."""
        if self.main:
            self.emit(line)
            with open(self.live, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            if self.wandb:
                self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def train_loss(self):
        """Mean loss per target token over the last log_interval steps (token-weighted); NaN before any."""
        if not self.window:
            return float("nan")
        return sum(s for s, _, _ in self.window) / max(sum(n for _, n, _ in self.window), 1.0)

    def train_metrics(self):
        """The objective's metrics (sums over its weight: pairs) as means over the same steps as train_loss()."""
        n = max(sum(n for _, n, _ in self.window), 1.0)
        names = {k for _, _, m in self.window for k in m if k != "loss"}
        return {k: sum(m.get(k, 0.0) for _, _, m in self.window) / n for k in sorted(names)}

    def step_done(self, step, epoch, loss_sum, n_targets, step_loss, lr, tokens_seen, metrics=None):
        """After optimizer step `step`: the bar (train_loss() and, as `batch`, this step's own loss), and
        every log_interval steps a line with train_loss(), tokens per second and the time left."""
        self.window.append((loss_sum, n_targets, metrics or {}))
        self.last_step = (step, epoch, lr, tokens_seen)
        if self.main:
            self.bar.update(1)
            rate = (tokens_seen - self.tokens_at_log) / max(time.time() - self.t_log, 1e-9)
            self.bar.set_postfix(loss=f"{self.train_loss():.4f}", batch=f"{step_loss:.4f}", lr=f"{lr:.1e}",
                                 tok_s=f"{rate:,.0f}")
        if step % self.cfg.log_interval == 0 or step == self.total:
            self.line()

    def line(self):
        """The log line (and jsonl row) at the last step done: train_loss(), and the speed since the
        previous line."""
        step, epoch, lr, tokens_seen = self.last_step
        now, loss = time.time(), self.train_loss()
        tok_s = (tokens_seen - self.tokens_at_log) / max(now - self.t_log, 1e-9)
        eta = (now - self.t0) / max(step - self.start_step, 1) * (self.total - step)
        if self.cfg.max_minutes:                         # a time limit ends the run first
            eta = max(0.0, min(eta, self.cfg.max_minutes * 60 - (now - self.t0)))
        metrics = self.train_metrics()
        self.record({"step": step, "epoch": epoch, "loss": loss, **metrics, "lr": lr, "tok_per_s": round(tok_s),
                     "tokens": tokens_seen}, log_line(step, self.total, loss, lr, tok_s, eta, metrics=metrics))
        self.t_log, self.tokens_at_log, self.logged_step = now, tokens_seen, step

    def time_limit(self, step, minutes):
        """The run stops at `step` because its --max_minutes passed: the steps since the last line get their
        line, and the log and the saved record say so."""
        self.stopped = f"time limit of {minutes:g} minutes reached at step {step} of {self.total}"
        if self.window and self.last_step[0] > self.logged_step:
            self.line()
        if self.main:
            self.record({"step": step, "stopped": self.stopped}, f"stopped: {self.stopped}")

    def record_val(self, step, val_loss, metrics=None):
        """A validation result: the loss and the objective's metrics (val_accuracy, ... in the row)."""
        self.val_loss, self.val_metrics = val_loss, {f"val_{k}": v for k, v in (metrics or {}).items()}
        self.record({"step": step, "val_loss": val_loss, **self.val_metrics},
                    log_line(step, self.total, val_loss=val_loss, metrics=metrics, prefix="val_"))

    def summary(self):
        """What every save records about the run so far; final_loss is train_loss(), the mean over the
        last log_interval steps (not the last batch)."""
        return {"final_loss": self.train_loss(), "val_loss": self.val_loss, **self.val_metrics,
                "train_time_s": round(time.time() - self.t0, 1), "stopped": self.stopped}

    def close_bar(self):
        if self.main:
            self.bar.close()

    def publish(self):
        """The log so far becomes out/logs/{run}.jsonl (atomically); called with every save."""
        if self.main:
            write_text(self.path, self.live.read_text(encoding="utf-8"))

    def close(self):
        """The loss-curve PNG next to the jsonl; the end of the wandb run."""
        if self.main:
            self.publish()
            self.live.unlink(missing_ok=True)
            plot_curves([self.path], layout.plot_path_for(self.path))
            if self.wandb:
                self.wandb.finish()

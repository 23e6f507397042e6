"""The whole pipeline on a fresh clone, in one command: tokenizer (only if missing), pretraining, full SFT,
the `lora_music` adapter on an identity + music mix, the identity and music tests, and a summary table.

    python scripts/quickstart.py                  # about 15 minutes on a 2-core CPU; a GPU is used if present
    python scripts/quickstart.py --minutes 5      # a smaller model and fewer steps: faster, worse
    python scripts/quickstart.py --force          # retrain every stage (finished stages are reused otherwise)

Each stage runs the same command a user would (trainer/*.py, scripts/prepare_data.py, eval_model.py), so
the output shows what to run by hand. Step counts come from the --minutes budget and a short measurement
of this machine's training speed. Outputs: out/ (checkpoints, logs, eval reports, quickstart_summary.md).
"""
import argparse
import json
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repo root

from cli import ArgumentParser, check_device, check_range, run_cli  # noqa: E402
from model.atomic import check_writable, write_text  # noqa: E402
from model.errors import UserError  # noqa: E402
from model.paths import (adapter_path, checkpoint_path, data_path, log_path, out_dir, quickstart_files,  # noqa: E402
                         report_path, run_name)

# share of the --minutes budget spent training each stage; the rest is start-up, data and the tests
SHARE = {"pretrain": 0.46, "full_sft": 0.18, "lora": 0.22}
# CPU shapes by budget (>= 8 min, >= 3 min, less) and their training tokens/s on an idle 2-core CPU
CPU_SHAPES = [dict(preset="small", hidden=256, layers=2, seq=256, batch=16),
              dict(preset="tiny", hidden=128, layers=2, seq=256, batch=16),
              dict(preset="tiny", hidden=64, layers=2, seq=128, batch=16)]
REF_SPEED = {(256, 2, 256): 5000.0, (128, 2, 256): 9000.0, (64, 2, 128): 12000.0}
LORA = "lora_music"


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="time budget; scales model size and steps")
    p.add_argument("--out_dir", default=None, help="where everything is written (default: $TINYMIND_OUT_DIR, "
                   "else <repo>/out)")
    p.add_argument("--data_dir", default=str(ROOT / "dataset"),
                   help="pretrain.jsonl, sft.jsonl, identity.jsonl, identity_test.jsonl, music.jsonl, music_test.jsonl")
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--force", action="store_true", help="retrain every stage even if its output exists")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def fmt_time(s):
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.0f}s"


class Pipeline:
    def __init__(self, args):
        import torch
        self.args = args
        self.out = out_dir(args.out_dir)
        self.data = Path(args.data_dir).expanduser().resolve()
        self.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.state_path, self.summary_path = quickstart_files(self.out)
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() and not args.force else {}
        self.rerun = args.force          # once a stage runs, every later stage runs too
        self.t0 = time.time()
        self.n, self.total = 0, 7
        self.plan = self.state["plan"] = self.choose_model()

    def choose_model(self):
        """Model shape for the budget, and the training speed that turns minutes into steps.

        On CPU the shapes and their speeds on a 2-core machine are known (REF_SPEED); a short measurement
        scales them for this machine, by at most 0.5x-20x, because a few steps on a busy machine are noisy
        (and two BLAS threads on two busy cores can look 20x slower than they train). On a GPU the
        MiniMind2-Small shape is measured as is."""
        m = self.args.minutes
        if "plan" in self.state and not self.args.force:    # an earlier run's shape: its finished stages fit
            shape = self.state["plan"]
        elif self.device.startswith("cuda"):
            shape = dict(preset="small", hidden=512, layers=8, seq=512, batch=32)
        else:
            shape = CPU_SHAPES[0 if m >= 8 else 1 if m >= 3 else 2]
        self.speed = None
        if self.all_reused():
            return shape
        measured = self.tokens_per_second(shape)
        ref = REF_SPEED.get((shape["hidden"], shape["layers"], shape["seq"]))
        self.speed = measured if ref is None else ref * min(20.0, max(0.5, measured / ref))
        print(f"training speed: measured {measured:,.0f} tokens/s, planning with {self.speed:,.0f}", flush=True)
        return shape

    def all_reused(self):
        return not self.args.force and all(s in self.state and Path(self.state[s]["output"]).exists()
                                           for s in ("pretrain", "full_sft", "lora"))

    def tokens_per_second(self, shape):
        """Measured training speed of one shape on this machine (a few AdamW steps)."""
        import torch
        from model.config import get_preset
        from model.model import TinyMindForCausalLM
        p = shape
        cfg = get_preset(p["preset"], hidden_size=p["hidden"], num_hidden_layers=p["layers"])
        model = TinyMindForCausalLM(cfg).to(self.device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        B, T = (p["batch"], p["seq"]) if self.device.startswith("cuda") else (4, p["seq"])
        x = torch.randint(0, cfg.vocab_size, (B, T), device=self.device)
        times, start = [], time.perf_counter()
        while len(times) < 3 or (len(times) < 10 and time.perf_counter() - start < 4):  # noise: several steps
            t = time.perf_counter()
            model(x, labels=x).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        speed = B * T / sorted(times[1:])[len(times[1:]) // 2]     # the median step, warm-up excluded
        del model, opt
        return speed

    def steps_for(self, stage, tokens_per_step, speed):
        budget = max(10.0, self.args.minutes * 60 * SHARE[stage])
        return max(10, int(budget * speed / tokens_per_step))

    def header(self, title):
        self.n += 1
        print(f"\n=== [{self.n}/{self.total}] {title}  (elapsed {fmt_time(time.time() - self.t0)})", flush=True)

    def run(self, stage, cmd, output, title):
        """Run one stage's command unless its output exists from an earlier run (and nothing before it
        was redone); record what ran in out/quickstart.json."""
        self.header(title)
        done = self.state.get(stage)
        if not self.rerun and done and Path(output).exists():
            print(f"reusing {output} (from an earlier run; --force retrains)", flush=True)
            return done
        self.rerun = True
        shown = " ".join(shlex.quote(str(c)) for c in cmd)
        print(f"$ {shown}", flush=True)
        t = time.time()
        res = subprocess.run([str(c) for c in cmd], cwd=ROOT)
        if res.returncode != 0:
            raise UserError(f"stage {stage} failed (exit {res.returncode}); its command was: {shown}")
        self.state[stage] = {"cmd": shown, "seconds": round(time.time() - t, 1), "output": str(output)}
        self.save_state()
        return self.state[stage]

    def save_state(self):
        write_text(self.state_path, json.dumps(self.state, indent=1))

    def need(self, name):
        path = self.data / name
        if not path.is_file():
            raise UserError(f"{path}: missing; the quickstart needs the shipped data (rebuild it with "
                            "`python scripts/build_data.py`) or --data_dir pointing to a folder that has it")
        return path

    def sample_file(self, src, n, name):
        """A seeded sample of n lines of src, written to out/data/name (atomically)."""
        lines = [ln for ln in src.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(lines) > n:
            lines = random.Random(self.args.seed).sample(lines, n)
        return write_text(data_path(self.out, name), "".join(ln + "\n" for ln in lines))

    def main(self):
        py, a, p = sys.executable, self.args, self.plan
        out, h = self.out, p["hidden"]
        files = {n: self.need(n) for n in ("pretrain.jsonl", "sft.jsonl", "identity.jsonl",
                                           "identity_test.jsonl", "music.jsonl", "music_test.jsonl")}
        print(f"quickstart: {a.minutes:g}-minute budget on {self.device}; model: hidden {h}, {p['layers']} layers, "
              f"max_seq_len {p['seq']}; outputs in {out}", flush=True)
        common = ["--out_dir", out, "--device", self.device, "--seed", a.seed, "--log_interval", 10]
        paths = {"pretrain": checkpoint_path(out, "pretrain", h), "full_sft": checkpoint_path(out, "full_sft", h),
                 "lora": adapter_path(out, LORA, h)}
        speed = self.speed or 1.0

        tok = ROOT / "model" / "tokenizer.model"
        if tok.exists():                      # the shipped tokenizer is never retrained (not even by --force)
            self.header("tokenizer")
            print(f"using {tok.relative_to(ROOT)}", flush=True)
        else:
            self.run("tokenizer", [py, "trainer/train_tokenizer.py", "--data_path", files["pretrain.jsonl"]],
                     tok, "tokenizer (model/tokenizer.model is missing)")

        B, T = p["batch"], p["seq"]
        steps = self.steps_for("pretrain", B * T, speed)
        self.run("pretrain", [py, "trainer/train_pretrain.py", *common, "--data_path", files["pretrain.jsonl"],
                              "--preset", p["preset"], "--hidden_size", h, "--num_hidden_layers", p["layers"],
                              "--max_seq_len", T, "--batch_size", B, "--max_steps", steps,
                              "--learning_rate", 2e-3 if h <= 128 else 1e-3, "--eval_interval", 0,
                              "--eval_batches", 10, "--save_interval", 10 ** 9],
                 paths["pretrain"], f"pretrain on {files['pretrain.jsonl'].name} ({steps} steps)")

        # chat samples are shorter than a window: about 120 tokens on average in the shipped sets
        steps = self.steps_for("full_sft", B * min(T, 160), speed)
        sft_val = self.data / "sft_val.jsonl"
        self.run("full_sft", [py, "trainer/train_full_sft.py", *common, "--data_path", files["sft.jsonl"],
                              *(["--val_data", sft_val] if sft_val.exists() else []),
                              "--hidden_size", h, "--max_seq_len", T, "--batch_size", B, "--max_steps", steps,
                              "--learning_rate", 5e-4, "--eval_interval", 0, "--eval_batches", 10,
                              "--save_interval", 10 ** 9],
                 paths["full_sft"], f"full SFT on {files['sft.jsonl'].name} ({steps} steps)")

        mix = data_path(out, "identity_music.jsonl")
        n_id, n_mu = (sum(1 for ln in open(files[f], encoding="utf-8") if ln.strip())
                      for f in ("identity.jsonl", "music.jsonl"))
        rep = max(1, round(1.5 * n_mu / max(1, n_id)))      # identity about 60% of the mix
        self.run("mix", [py, "scripts/prepare_data.py", "mix", f"{files['identity.jsonl']}:{rep}",
                         f"{files['music.jsonl']}:1", "-o", mix, "--seed", a.seed],
                 mix, f"mix identity x{rep} + music x1 -> {mix.relative_to(out.parent) if out.parent in mix.parents else mix}")

        steps = int(self.steps_for("lora", B * min(T, 100), speed) * 1.4)  # no weight gradients for the base
        self.run("lora", [py, "trainer/train_lora.py", *common, "--lora_name", LORA, "--data_path", mix,
                          "--hidden_size", h, "--max_seq_len", T, "--batch_size", B, "--max_steps", steps,
                          "--learning_rate", 2e-3, "--lora_rank", 16, "--lora_alpha", 32,
                          "--eval_interval", 0, "--eval_batches", 10, "--save_interval", 10 ** 9],
                 paths["lora"], f"LoRA {LORA} on the mix ({steps} steps)")

        # tests: greedy answers; the number of questions keeps small budgets small
        few = a.minutes < 8 and not self.device.startswith("cuda")
        ident = files["identity_test.jsonl"] if not few else self.sample_file(files["identity_test.jsonl"], 24,
                                                                              "identity_test_sample.jsonl")
        trained = self.sample_file(files["music.jsonl"], 24 if few else 60, "music_trained_sample.jsonl")
        held = files["music_test.jsonl"] if not few else self.sample_file(files["music_test.jsonl"], 24,
                                                                          "music_test_sample.jsonl")
        ev = [py, "eval_model.py", "--out_dir", out, "--device", self.device, "--hidden_size", h,
              "--batch_size", 32, "--max_new_tokens", 48 if few else 64]
        sft, lora = run_name(paths["full_sft"]), run_name(paths["lora"])
        reports = {"id_sft": report_path(out, "identity", sft), "id_lora": report_path(out, "identity", lora),
                   "mu_trained": report_path(out, f"task_{trained.stem}", lora),
                   "mu_held": report_path(out, f"task_{held.stem}", lora)}
        self.run("eval_sft", ev + ["--model_mode", 1, "--identity_test", ident], reports["id_sft"],
                 "identity test: the full SFT model")
        self.run("eval_lora", ev + ["--lora_name", LORA, "--identity_test", ident, "--task_test", trained,
                                    "--task_test", held], reports["mu_held"],
                 f"identity and music tests: {LORA} (music: trained and held-out questions)")
        self.summary(paths, reports)

    def log_stats(self, run):
        """(steps, final train loss, final val loss) from out/logs/{run}.jsonl."""
        path = log_path(self.out, run)
        steps, loss, val = 0, None, None
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                steps = max(steps, row.get("step", 0))
                loss = row["loss"] if "loss" in row else loss
                val = row["val_loss"] if "val_loss" in row else val
        return steps, loss, val

    def summary(self, paths, reports):
        def num(x):
            return "-" if x is None else f"{x:.3f}"

        rows = ["| stage | steps | train loss | val loss | time |", "|---|---:|---:|---:|---:|"]
        for stage in ("pretrain", "full_sft", "lora"):
            run = run_name(paths[stage])
            steps, loss, val = self.log_stats(run)
            secs = self.state.get(stage, {}).get("seconds")
            rows.append(f"| {run} | {steps} | {num(loss)} | {num(val)} | {fmt_time(secs) if secs else '-'} |")
        r = {k: json.loads(v.read_text(encoding="utf-8")) for k, v in reports.items()}

        def rate(k):
            return f"{r[k]['rate']:.0%} ({r[k]['passed']}/{r[k]['n']})"
        rows += ["", "| test | full_sft | lora_music |", "|---|---:|---:|",
                 f"| identity, held-out phrasings | {rate('id_sft')} | {rate('id_lora')} |",
                 f"| music, trained questions | | {rate('mu_trained')} |",
                 f"| music, held-out questions | | {rate('mu_held')} |"]
        total = time.time() - self.t0
        rows += ["", f"device {self.device}, budget {self.args.minutes:g} min, this run took {fmt_time(total)}"]
        table = "\n".join(rows)
        dest = write_text(self.summary_path, table + "\n")
        default_out = self.out == out_dir()
        od = "" if default_out else f" --out_dir {shlex.quote(str(self.out))}"
        env = "" if default_out else f"TINYMIND_OUT_DIR={shlex.quote(str(self.out))} "
        print("\n=== summary (also in " + str(dest) + ")\n" + table)
        print(f"\nchat in the terminal:   python eval_model.py --lora_name {LORA} --model_mode 1{od}")
        print(f"open the web demo:      {env}streamlit run scripts/web_demo.py")
        print(f"train the LoRA again:   python trainer/train_lora.py --lora_name {LORA} "
              f"--data_path ../dataset/music.jsonl --epochs 5{od}")


def main(argv=None):
    args = parse_args(argv)
    check_range("--minutes", args.minutes, 0.0, 7 * 24 * 60, low_open=True)
    check_range("--seed", args.seed, 0, 2**31 - 1, integer=True)
    check_device(args.device)
    check_writable(quickstart_files(out_dir(args.out_dir))[0])
    Pipeline(args).main()


if __name__ == "__main__":
    run_cli(main)

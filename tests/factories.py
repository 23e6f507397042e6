"""Test factories: tiny models, checkpoints, LoRA adapters and chat data built in the test, plus the helpers
for running the trainers (REPO, FAST, run_python). Plain functions; tests/conftest.py wraps the common ones
in fixtures (tiny_checkpoint, tiny_adapter, chat_data, one_thread).

    from factories import make_adapter, make_checkpoint, write_chat
"""
import functools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# the commands the tests start run this checkout's code, wherever the editable install (pip install -e .) points
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])

from checkpoint.pth import file_sha256, load_model, save_checkpoint  # noqa: E402
from model.config import get_preset  # noqa: E402
from checkpoint.adapter import save_adapter  # noqa: E402
from model.lora import LoRAConfig, LoRALinear, apply_lora  # noqa: E402
from model.model import TinyMindForCausalLM  # noqa: E402
from tokenizer.tokenizer import load_default_tokenizer  # noqa: E402

# trainer flags for a run of a few seconds on CPU
FAST = ["--max_seq_len", "64", "--batch_size", "4", "--log_interval", "1", "--eval_interval", "3",
        "--device", "cpu", "--dtype", "float32"]
WORDS = "the cat sat on a mat music song guitar piano note chord rhythm melody 音乐 歌曲 吉他 tempo".split()


@functools.lru_cache(maxsize=1)
def default_tokenizer():
    """The shipped tokenizer, read once per test session."""
    return load_default_tokenizer()


def make_model(vocab_size=None, seed=0, std=None, **overrides):
    """A random model of the tiny preset (2 layers, width 64), in eval mode. vocab_size defaults to the
    shipped tokenizer's. std: redraw every matrix from N(0, std); large logits make greedy decoding wander
    instead of repeating one token."""
    vocab_size = vocab_size or default_tokenizer().vocab_size
    torch.manual_seed(seed)
    model = TinyMindForCausalLM(get_preset("tiny", vocab_size=vocab_size, **overrides)).eval()
    if std is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0, std)
    return model


def train_memorizer(prompt, seed=0):
    """A tiny model trained (float32, a few seconds) to continue prompt with one fixed 40-token sequence:
    its greedy choices are decided by real margins, as a trained model's are, not by near ties.
    -> (model in eval mode, the 40 tokens)."""
    torch.manual_seed(seed)
    model = make_model(seed=seed)
    seq = torch.tensor([list(prompt) + torch.randint(5, 6000, (40,)).tolist()])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model(seq, labels=seq).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.05
    return model.eval(), seq[0, len(prompt):].tolist()


def make_checkpoint(path, stage="full_sft", hidden=64, seed=0, meta=None, std=None, **overrides):
    """A tiny untrained checkpoint with the shipped tokenizer, as a trainer would save it; returns path.
    overrides are ModelConfig fields (dropout=0.1, num_hidden_layers=3, ...); std as make_model's."""
    model = make_model(seed=seed, hidden_size=hidden, std=std, **overrides)
    save_checkpoint(path, model.state_dict(), model.config, default_tokenizer(),
                    {"stage": stage, "step": 0, **(meta or {})})
    return Path(path)


def randomize_lora_B(model, seed=1, std=0.1):
    """LoRA B starts at zero; give it values so the adapter changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * std)
    return model


def make_adapter(path, base_path, lora=None, seed=1, meta=None, config=None):
    """Save a LoRA adapter on base_path whose lora_B is non-zero (applying it changes the logits); returns
    the wrapped model (eval mode) whose weights the file holds. A base_path that does not exist is recorded
    as it is (sha256 of zeros); config then gives the model's shape."""
    lora = lora or LoRAConfig(r=4, alpha=8)
    if Path(base_path).exists():
        model, tok, _ = load_model(base_path)
        base_sha, tok_sha = file_sha256(base_path), tok.sha256
    else:
        model, base_sha, tok_sha = TinyMindForCausalLM(config).eval(), "0" * 64, default_tokenizer().sha256
    apply_lora(model, lora)
    randomize_lora_B(model, seed)
    save_adapter(path, model, lora, base_path, base_sha, model.config, tok_sha,
                 {"step": 3, "train_config": {"data_path": "x.jsonl"}, **(meta or {})})
    return model


def words(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def write_jsonl(path, rows):
    """One JSON record a line; a str row is written as it is (a broken line for a bad-input test)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


def write_chat(path, n=24, seed=0):
    """n MiniMind-format conversations (one user turn, one assistant reply) of random words; returns path."""
    rng = random.Random(seed)
    return write_jsonl(path, [{"conversations": [{"role": "user", "content": words(rng, 2, 8)},
                                                 {"role": "assistant", "content": words(rng, 2, 20)}]}
                              for _ in range(n)])


def write_text(path, n=60, seed=0):
    """n pretraining records {"text": ...} of random words; returns path."""
    rng = random.Random(seed)
    return write_jsonl(path, [{"text": words(rng, 10, 40)} for _ in range(n)])


def run_python(args, cwd, env=None, check=True):
    """python *args in cwd with one CPU thread; asserts exit 0 (showing the output's tail) unless check=False."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    r = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def run_main(main, argv, capsys, stdin=None, monkeypatch=None):
    """A command's main(argv) run in this process as its script runs it (cli.run_cli: a UserError is one
    line and exit 2) -> (exit status, stdout, stderr); stdin, a string, is what it reads."""
    import io
    from core.cli import run_cli
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = 0
    try:
        run_cli(main, argv)
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def losses_with_and_without(main, argv, flag, out_root, run):
    """A trainer's main run twice in this process, without and with `flag`, each into its own out_dir under
    out_root -> {False: (losses, config), True: (losses, config)}: the logged step losses of run `run`
    (full_sft_64, dpo_64, ...) and the config its log records."""
    from core.cli import run_cli
    from trainer.runlog import read_rows
    result = {}
    for on in (False, True):
        out = Path(out_root) / f"out_{on}"
        run_cli(main, [*argv, "--out_dir", str(out)] + ([flag] if on else []))
        rows = read_rows(out / "logs" / f"{run}.jsonl")
        result[on] = ([r["loss"] for r in rows if "loss" in r], rows[0]["config"])
    return result


def run_argv(main, argv, capsys, monkeypatch):
    """run_main for a command whose main() reads sys.argv itself (convert_model.py, lm_eval_run.py)."""
    monkeypatch.setattr(sys, "argv", ["command", *map(str, argv)])
    return run_main(lambda _: main(), argv, capsys)


def free_port():
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(out, *extra):
    """scripts/serve_openai_api.py serving out on 127.0.0.1 (a free port, CPU, one thread), once it answers
    -> (process, base url ".../v1"). Its output goes to a file, proc.log_path (server_log reads it), so that
    a server that logs a lot never stalls on a full pipe."""
    import tempfile
    import time
    import httpx                                   # the openai client's HTTP library: only the server tests need it
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="server-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "scripts/serve_openai_api.py", "--out_dir", str(out), "--port", str(port),
                             "--device", "cpu", *extra], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    log.close()                                    # the server holds its own copy
    proc.log_path = log.name
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(300):
        try:
            if httpx.get(f"{url[:-3]}/health", timeout=1, headers={"authorization": "Bearer k"}).status_code in (200, 401):
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(server_log(proc))


def server_log(proc):
    """What a server started by start_server has printed so far."""
    return Path(proc.log_path).read_text(encoding="utf-8", errors="replace")


def stop_server(proc):
    proc.terminate()
    proc.wait(10)
    Path(proc.log_path).unlink(missing_ok=True)

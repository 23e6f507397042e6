"""THE out/ layout: where the output folder is, what every file in it is called, and how to find one.

    out/pretrain_512.pth, out/full_sft_512.pth          full checkpoints ({stage}_{hidden}[_moe].pth)
    out/lora/lora_music_512.pth                         LoRA adapters ({lora_name}_{hidden}[_moe].pth)
    out/lora_music_merged_512.pth                       an adapter merged into its base (scripts/merge_lora.py)
    out/smollm2_135m.pth                                SmolLM2-135M-Instruct imported (scripts/convert_model.py)
    out/logs/{run}.jsonl, out/logs/{run}.png            every logged step, loss curves ({run} = file stem)
    out/state/{run}/step_N.pth                          resumable training states
    out/eval/{test}_{label}.json                        test reports (bench_{task}_{k}shot[_limitN]_{label}.json too)
    out/eval/{name}.md/.csv/.json/.png                  side-by-side tables of several models
    out/study/{study}/                                  a comparison study (scripts/study.py)
    out/data/                                           data the tools derive (mixes, samples)
    out/index/{folder}-{hash}/                          a documents folder's retrieval index (chat/retrieval.py)
    out/memory/{session}.jsonl                          a chat session's long-term memory (chat/memory.py)
    out/previous/{run}-{time}/                          a finished output a new run replaced, kept
    out/quickstart.json, out/quickstart_summary.md      what the quickstart ran, its summary table

The folder is --out_dir where a tool has it, else $TINYMIND_OUT_DIR, else <repo>/out: every tool, the
trainers, eval_model.py, the web demo and the quickstart alike. Nobody else builds or globs these names.

Library module, no command:
    from checkpoint.layout import out_dir, checkpoint_path, find_stage_checkpoint
    base = find_stage_checkpoint(out_dir(), "full_sft", hidden_size=512)
"""
import os
import re
from pathlib import Path

from core.errors import UserError

OUT_ENV = "TINYMIND_OUT_DIR"
DEFAULT_HIDDEN = 512                  # MiniMind's default width: the name picked when several are there
NAME_RE = re.compile(r"^(?P<stem>.+)_(?P<hidden>\d+)(?P<moe>_moe)?\.pth$")
# how each kind of file is made (the "make it with ..." hint of every "not found" message)
MAKERS = {"pretrain": "python trainer/train_pretrain.py", "full_sft": "python trainer/train_full_sft.py",
          "lora": "python trainer/train_lora.py", "dpo": "python trainer/train_dpo.py",
          "grpo": "python trainer/train_grpo.py"}
# MiniMind's --model_mode numbers: the stage whose out/{stage}_{hidden}.pth each one loads
MODEL_MODES = {0: "pretrain", 1: "full_sft", 2: "dpo", 3: "reason", 4: "ppo_actor", 5: "grpo"}
# older names MiniMind gave a stage's files, found too (its RLHF model was rlhf_512.pth before dpo_512.pth)
STAGE_ALIASES = {"dpo": ("rlhf",)}
CACHE_ENV = "TINYMIND_CACHE"


def cache_dir():
    """Where downloads from the package registries are kept (the SmolLM2 wheel, the benchmark items, the data
    sources): $TINYMIND_CACHE, else ~/.cache/tinymind."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tinymind").expanduser()


def repo_root():
    return Path(__file__).resolve().parents[1]


def out_dir(override=None):
    """The output folder: override (a --out_dir value) if given, else $TINYMIND_OUT_DIR, else <repo>/out."""
    chosen = override or os.environ.get(OUT_ENV) or repo_root() / "out"
    return Path(chosen).expanduser().resolve()


def resolve_input(path):
    """An input file as the user gave it: relative to the current folder, else to trainer/ (so that
    `--data_path ../dataset/music.jsonl` works from the repository root and from trainer/), else to the
    repository root. A path found nowhere is returned as given, for the caller's 'not found' line."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    for base in (repo_root() / "trainer", repo_root()):
        if (base / p).exists():
            return base / p
    return p


def checkpoint_name(stage, hidden_size, use_moe=False, lora_name=None):
    """MiniMind's file names: pretrain_512.pth, full_sft_512.pth, lora/lora_music_512.pth (+ _moe)."""
    suffix = "_moe" if use_moe else ""
    if stage == "lora":
        return f"lora/{lora_name}_{hidden_size}{suffix}.pth"
    return f"{stage}_{hidden_size}{suffix}.pth"


def parse_name(path):
    """out/full_sft_512_moe.pth -> ("full_sft", 512, True); None for a name not in this layout."""
    m = NAME_RE.match(Path(path).name)
    return (m["stem"], int(m["hidden"]), bool(m["moe"])) if m else None


def model_mode(path):
    """MiniMind's --model_mode of a checkpoint by its name (dpo_512.pth, MiniMind's older rlhf_512.pth: 2), or None."""
    stem = (parse_name(path) or [None])[0]
    return next((m for m, stage in MODEL_MODES.items() if stem == stage or stem in STAGE_ALIASES.get(stage, ())), None)


def checkpoint_path(out, stage, hidden_size, use_moe=False):
    return Path(out) / checkpoint_name(stage, hidden_size, use_moe)


def adapter_path(out, lora_name, hidden_size, use_moe=False):
    return Path(out) / checkpoint_name("lora", hidden_size, use_moe, lora_name=lora_name)


def merged_path(adapter, hidden_size, use_moe=False):
    """out/lora/lora_music_512.pth -> out/lora_music_merged_512.pth (the size suffix stays last)."""
    adapter = Path(adapter)
    folder = adapter.parent.parent if adapter.parent.name == "lora" else adapter.parent
    parsed = parse_name(adapter)
    if parsed and parsed[1] == hidden_size and parsed[2] == use_moe:
        return folder / checkpoint_name(f"{parsed[0]}_merged", hidden_size, use_moe)
    return folder / f"{adapter.stem}_merged.pth"


def run_name(artefact):
    """The name a run's logs and states go under: the stem of the file it writes (lora_music_512)."""
    return Path(artefact).stem


def smollm2_path(out):
    """Where `scripts/convert_model.py --smollm2` writes the imported SmolLM2-135M-Instruct."""
    return Path(out) / "smollm2_135m.pth"


def log_path(out, run):
    return Path(out) / "logs" / f"{run}.jsonl"


def log_path_for(artefact):
    """The run log of a checkpoint or adapter: {its out folder}/logs/{run}.jsonl (an adapter lies in out/lora)."""
    artefact = Path(artefact)
    out = artefact.parent.parent if artefact.parent.name == "lora" else artefact.parent
    return log_path(out, run_name(artefact))


def plot_path_for(log):
    """A run's loss-curve PNG, next to its jsonl log: out/logs/{run}.png."""
    return Path(log).with_suffix(".png")


def plot_path(out, run):
    return plot_path_for(log_path(out, run))


def state_dir(out, run):
    return Path(out) / "state" / run


def state_file(folder, step):
    """A run's resumable state at a step, in its state_dir: step_N.pth."""
    return Path(folder) / f"step_{step}.pth"


def state_path(out, run, step):
    return state_file(state_dir(out, run), step)


def reference_path(folder):
    return Path(folder) / "reference_logps.pth"          # a DPO run's precomputed reference log-probabilities


def list_state_files(folder):
    """The states in a run's state_dir, oldest first (by step number: step_10 comes after step_9)."""
    return sorted(Path(folder).glob("step_*.pth"), key=lambda p: int(p.stem.split("_")[1]))


def report_path(out, test, label, model_hash=None):
    """out/eval/{test}_{label}.json: the latest report of a test on the model labelled label. With
    model_hash (a short hash of the model tested) out/eval/{test}_{label}_{model_hash}.json: where an
    earlier report of another model with the same label is kept (evaluation/answer_tests.py moves it there)."""
    return Path(out) / "eval" / (f"{test}_{label}_{model_hash}.json" if model_hash else f"{test}_{label}.json")


def comparison_path(out, name, ext):
    """out/eval/{name}.{ext}: a side-by-side table of several models (md, csv, json) and its chart (png).
    name must be a plain name (--name): no folders."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: give a plain name (the table goes to {Path(out) / 'eval'}/{{name}}.md)")
    return Path(out) / "eval" / f"{name}.{ext}"


def bench_settings(num_fewshot, limit=None, chat=False):
    """_{k}shot[_limit{N}][_chat]: how a benchmark ran, in the names of its reports."""
    return f"_{num_fewshot}shot" + (f"_limit{limit}" if limit else "") + ("_chat" if chat else "")


def bench_test_name(task, num_fewshot, limit=None, chat=False):
    """The test name of a benchmark report (report_path): bench_{task}_{k}shot[_limit{N}][_chat], so that a
    run with other settings never replaces another's report."""
    return f"bench_{task}" + bench_settings(num_fewshot, limit, chat)


def study_dir(out, study):
    """out/study/{study}/: a comparison study's arms and report (scripts/study.py)."""
    return Path(out) / "study" / study


def data_path(out, name):
    return Path(out) / "data" / name


def index_dir(out, docs):
    """out/index/{folder}-{hash}/: the retrieval index of a documents folder (hash of its resolved path)."""
    import hashlib
    docs = Path(docs).resolve()
    digest = hashlib.sha256(str(docs).encode("utf-8", "surrogateescape")).hexdigest()     # a name's own bytes
    return Path(out) / "index" / f"{docs.name or 'root'}-{digest[:10]}"


SESSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def memory_path(out, session, what="--session"):
    """out/memory/{session}.jsonl: a chat session's remembered turns; session is a plain name (--session)."""
    if not isinstance(session, str) or not SESSION_RE.fullmatch(session):
        raise UserError(f"{what} {session!r}: give a plain name of letters, digits, '_', '.' or '-' "
                        "(up to 64, starting with a letter or digit), e.g. --session alice")
    return Path(out) / "memory" / f"{session}.jsonl"


def quickstart_files(out):
    """(the quickstart's record of what ran, its summary table)."""
    return Path(out) / "quickstart.json", Path(out) / "quickstart_summary.md"


def is_weights_file(path):
    """A finished .pth file (not a hidden temporary left by an atomic write)."""
    path = Path(path)
    return path.is_file() and path.suffix == ".pth" and not path.name.startswith(".")


def find_checkpoints(out):
    """Full-model checkpoints directly in out, sorted by name."""
    out = Path(out)
    return sorted(p for p in out.glob("*.pth") if is_weights_file(p)) if out.is_dir() else []


def find_adapters(out):
    """LoRA adapters in out/lora, sorted by name."""
    return find_checkpoints(Path(out) / "lora")


def candidates(folder, stem, use_moe=None):
    """Files folder/{stem}_{hidden}[_moe].pth -> [(hidden_size, path)] (use_moe None: either kind)."""
    found = []
    for p in find_checkpoints(folder):
        parsed = parse_name(p)
        if parsed and parsed[0] == stem and (use_moe is None or parsed[2] == use_moe):
            found.append((parsed[1], p))
    return found


def make_hint(stage, hidden_size=None, lora_name=None, use_moe=False):
    """The command that makes a missing file, for the end of a 'not found' line."""
    if stage not in MAKERS:
        return (f"a MiniMind {stage}_*.pth copied into out/ (TinyMind has no {stage} trainer yet; "
                "`python eval_model.py --help` lists the modes)")
    cmd = MAKERS[stage]
    if stage == "lora":
        cmd += f" --lora_name {lora_name or 'lora_music'} --data_path ../dataset/music.jsonl"
    if hidden_size and hidden_size != DEFAULT_HIDDEN:
        cmd += f" --hidden_size {hidden_size}"
    return f"`{cmd}{' --use_moe' if use_moe else ''}`"


def pick(found, hidden_size, what, flag_hint):
    """One path of [(hidden, path)]: the given --hidden_size, else the only one, else the 512 one.
    None when there is nothing to pick; several without a way to choose is one line saying how."""
    if hidden_size:
        return next((p for h, p in found if h == hidden_size), None)
    if len(found) == 1:
        return found[0][1]
    default = next((p for h, p in found if h == DEFAULT_HIDDEN), None)
    if default is None and found:
        raise UserError(f"several {what} ({', '.join(p.name for _, p in found)}); choose one with {flag_hint}")
    return default


def find_stage_checkpoint(out, stage, hidden_size=None, use_moe=False, flag_hint="--hidden_size or --base"):
    """out/{stage}_{hidden}[_moe].pth: the given size, else the only one there, else the 512 one. Missing:
    one line naming the file and the command that makes it."""
    out = Path(out)
    found = candidates(out, stage, use_moe) or \
        [c for alias in STAGE_ALIASES.get(stage, ()) for c in candidates(out, alias, use_moe)]
    path = pick(found, hidden_size, f"{stage} checkpoints in {out}", flag_hint)
    if path is None:
        want = checkpoint_path(out, stage, hidden_size or DEFAULT_HIDDEN, use_moe)
        others = f" (there: {', '.join(p.name for _, p in found)})" if found else ""
        quick = " or run `python scripts/quickstart.py`" if stage in ("pretrain", "full_sft") else ""
        raise UserError(f"{want}: checkpoint not found{others}; make it with {make_hint(stage, hidden_size, use_moe=use_moe)} "
                        f"(same --hidden_size/--out_dir){quick}")
    return path.resolve()


def find_lora_base(out, hidden_size=None, use_moe=False):
    """The checkpoint train_lora.py starts from without --base -> (path, why): out/full_sft_{hidden}.pth
    picked like find_stage_checkpoint; when out holds no full-SFT checkpoint, the imported SmolLM2
    (out/smollm2_135m.pth, scripts/convert_model.py --smollm2); neither is the one 'not found' line."""
    out = Path(out)
    if candidates(out, "full_sft", use_moe) or hidden_size or use_moe or not smollm2_path(out).is_file():
        path = find_stage_checkpoint(out, "full_sft", hidden_size, use_moe)
        return path, "the full-SFT checkpoint in out/; --base picks another"
    return smollm2_path(out).resolve(), "no full-SFT checkpoint in out/, so the imported SmolLM2; --base picks another"


def previous_dir(out, run, stamp):
    """Where the finished outputs of run `run` go when a new run replaces them: out/previous/{run}-{stamp}."""
    return Path(out) / "previous" / f"{run}-{stamp}"


def find_adapter(out, lora_name, hidden_size=None):
    """out/lora/{lora_name}_{hidden}[_moe].pth, picked like find_stage_checkpoint."""
    out = Path(out)
    found = candidates(out / "lora", lora_name)
    path = pick(found, hidden_size, f"adapters named {lora_name!r} in {out / 'lora'}", "--hidden_size")
    if path is None:
        have = ", ".join(p.stem for p in find_adapters(out)) or "none"
        what = (f"no adapter {lora_name!r} with hidden size {hidden_size}" if found
                else f"no adapter named {lora_name!r}")
        raise UserError(f"{what} in {out / 'lora'} (adapters there: {have}); train one with "
                        f"{make_hint('lora', hidden_size, lora_name)}")
    return path.resolve()


def find_adapter_base(adapter, base_path=None, out=None):
    """The base an adapter loads onto: base_path if given, else the base it records, tried as recorded,
    relative to the repository, then by name in out (default: out_dir())."""
    name = adapter.get("file", "adapter")
    if base_path is not None:
        if not Path(base_path).is_file():
            raise UserError(f"{base_path}: base checkpoint not found")
        return Path(base_path)
    out = Path(out) if out is not None else out_dir()
    recorded = Path(adapter["base"]["path"])
    for p in (recorded, repo_root() / recorded, out / recorded.name):
        if p.is_file():
            return p
    raise UserError(f"{name}: its base checkpoint {recorded} was not found (nor {recorded.name} in {out}); put "
                    "the base back there, or give it with --base PATH (eval_model.py, merge_lora.py)")


def within(root, path):
    """Whether path (relative to root, or absolute), resolved, lies inside root (symlinks and '..' included)."""
    root = Path(root).resolve()
    return (root / path).resolve().is_relative_to(root)


def inside(out, path):
    """path resolved, refused unless it lies inside out (within)."""
    if not within(out, path):
        raise UserError(f"{path}: only files under {Path(out).resolve()} can be opened")
    return (Path(out).resolve() / path).resolve()

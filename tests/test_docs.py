"""README.txt is a map and docs/*.md its pages: README.txt is short and links every page; every link and every
file path that README.txt, docs/, BENCHMARKS.md, RELIABILITY.md and dataset/SOURCES.md mention exists; and
every command README.txt and docs/ show runs with --help from the repository root (a trainer also from
inside trainer/). The commands are read from the docs, so a newly documented command is covered without
touching this test.

    python -m pytest tests/test_docs.py -q
"""
import ast
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from factories import REPO, run_python

README = REPO / "README.txt"
DOCS = sorted((REPO / "docs").glob("*.md"))
# files whose path mentions must exist (commands are run for README.txt and docs/ only)
MENTIONING = [README, *DOCS, REPO / "BENCHMARKS.md", REPO / "RELIABILITY.md", REPO / "dataset" / "SOURCES.md"]
MAX_README_LINES = 250
# what README.txt must show character for character (.ci/run runs the test command as README.txt shows it)
EXACT = [
    "pip install torch==2.13.0 && pip install -r requirements.txt && python scripts/quickstart.py",
    "pip install -r requirements-dev.txt && python -m pytest -q",
    "python trainer/train_lora.py --lora_name lora_music --data_path ../dataset/music.jsonl --epochs 5",
    "python eval_model.py --lora_name lora_music --model_mode 1",
    "streamlit run scripts/web_demo.py",
]
# the project's own packages: the top-level folders with an __init__.py
PACKAGES = {p.parent.name for p in REPO.glob("*/__init__.py")}
# a path mention: folder/.../name, starting at a word boundary (not inside a URL, ../x or another path)
PATH_RX = re.compile(r"(?<![\w./~:<{$*-])(\.?[A-Za-z_][\w.*<>{}-]*/(?:[\w.*<>{}-]+/)*[\w.*<>{}-]*)")
LINK_RX = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")          # a markdown link [text](target)


def read_lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def top_folders():
    """The repository's top-level folders a path mention can start with (out/ holds only what runs made)."""
    return {p.name for p in REPO.iterdir() if p.is_dir() and p.name not in ("out", ".git")}


def path_mentions(path):
    """(line number, path) for every mention of a file or folder under one of the top-level folders."""
    tops, found = top_folders(), []
    for n, line in enumerate(read_lines(path), 1):
        for m in PATH_RX.finditer(line):
            p = m.group(1).rstrip(".,:;")
            if p.split("/")[0] in tops and not any(c in p for c in "*{}<>"):
                found.append((n, p))
    return found


def markdown_links(path):
    """(line number, target) for every markdown link that is not a URL or an anchor on the same page."""
    return [(n, target.split("#")[0]) for n, line in enumerate(read_lines(path), 1)
            for target in LINK_RX.findall(line)
            if not re.match(r"[a-z]+:", target) and not target.startswith("#")]


def command_of(segment):
    """What a shell segment runs, as a key: ("script", path), ("module", name), ("streamlit", path) or None."""
    words = segment.split()
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):   # OMP_NUM_THREADS=1 python ...
        words = words[1:]
    if len(words) >= 2 and words[0] == "python":
        if words[1] == "-m" and len(words) > 2 and words[2].split(".")[0] in PACKAGES:
            return "module", words[2]
        if re.fullmatch(r"(scripts|trainer)/[\w/]+\.py|eval_model\.py", words[1]):
            return "script", words[1]
    if words[:2] == ["streamlit", "run"] and len(words) > 2:
        return "streamlit", words[2]
    if words and words[0] == "torchrun":
        script = next((w for w in words[1:] if w.endswith(".py")), None)
        return ("script", script) if script else None
    return None


def documented_commands():
    """{command key: [where it is shown, ...]} for every command line of README.txt and docs/*.md: a line that
    starts (after indentation) with a command, or one after `&&` or `|` on such a line."""
    commands = {}
    for page in [README, *DOCS]:
        for n, line in enumerate(read_lines(page), 1):
            for segment in re.split(r"\s(?:&&|\|)\s", line.strip()):
                key = command_of(segment)
                if key:
                    commands.setdefault(key, []).append(f"{page.relative_to(REPO)}:{n}")
    return commands


def test_readme_is_a_short_map():
    lines = read_lines(README)
    assert len(lines) <= MAX_README_LINES, f"README.txt has {len(lines)} lines; the depth goes to docs/*.md"
    text = "\n".join(lines)
    missing = [c for c in EXACT if c not in text]
    assert not missing, f"README.txt must show these commands exactly as they were: {missing}"


def test_every_docs_page_is_linked_from_readme():
    assert DOCS, "docs/ has no pages"
    linked = set(re.findall(r"docs/[\w.-]+\.md", README.read_text(encoding="utf-8")))
    unlinked = [p.name for p in DOCS if f"docs/{p.name}" not in linked]
    assert not unlinked, f"docs pages README.txt does not link: {unlinked}"


def test_every_link_and_path_exists():
    broken = []
    for page in MENTIONING:
        where = page.relative_to(REPO)
        broken += [f"{where}:{n}: {p}" for n, p in path_mentions(page) if not (REPO / p).exists()]
        broken += [f"{where}:{n}: link {t}" for n, t in markdown_links(page) if not (page.parent / t).exists()]
    assert not broken, "mentioned but not there (moved? renamed?):\n" + "\n".join(broken)


def test_the_parser_finds_the_documented_commands():
    found = documented_commands()
    for key in [("script", "trainer/train_lora.py"), ("script", "eval_model.py"), ("script", "scripts/quickstart.py"),
                ("streamlit", "scripts/web_demo.py"), ("script", "trainer/train_full_sft.py")]:
        assert key in found, f"{key} is in README.txt but the command parser missed it"
    assert len(found) >= 20, sorted(found)


def streamlit_check(path):
    """A streamlit app is not started: the file must exist and the project modules it imports must import."""
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules = sorted({m for m in modules if m.split(".")[0] in PACKAGES})
    return ["-c", "; ".join(f"import {m}" for m in modules) or "pass"], REPO


def runs_of(commands):
    """(label, python args, cwd) for each distinct script or module: its --help, once."""
    runs, missing = [], []
    for (kind, target), where in sorted(commands.items()):
        label = f"{kind} {target} (shown at {', '.join(where[:3])})"
        if kind != "module" and not (REPO / target).is_file():
            missing.append(label)
        elif kind == "streamlit":
            runs.append((label, *streamlit_check(target)))
        elif kind == "module":
            runs.append((label, ["-m", target, "--help"], REPO))
        else:
            runs.append((label, [target, "--help"], REPO))
            if re.fullmatch(r"trainer/train_\w+\.py", target):     # cd trainer && python train_X.py
                runs.append((f"{label}, from inside trainer/", [Path(target).name, "--help"], REPO / "trainer"))
    return runs, missing


def test_every_documented_command_runs_with_help():
    runs, missing = runs_of(documented_commands())
    assert not missing, "documented commands whose file is not there:\n" + "\n".join(missing)

    def run(job):
        label, args, cwd = job
        r = run_python(args, cwd=cwd, check=False)
        out = r.stdout + r.stderr
        if r.returncode != 0:
            return f"{label}: exit {r.returncode}\n{out[-1500:]}"
        if args[-1] == "--help" and "usage" not in out.lower():
            return f"{label}: --help printed no usage (did it run for real?)\n{out[-500:]}"
        return None
    with ThreadPoolExecutor(max_workers=2) as pool:      # each run imports torch: two at a time on 2 cores
        failures = [f for f in pool.map(run, runs) if f]
    assert not failures, "\n\n".join(failures)


def test_the_flag_table_is_the_trainers_flags():
    """docs/training.md's table of trainer flags is trainer.args.flag_table(): a flag added, dropped or
    given another default shows there."""
    from trainer.flag_table import flag_table
    assert flag_table() in (REPO / "docs" / "training.md").read_text(encoding="utf-8")

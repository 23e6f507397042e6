"""The shape of the house (shared/STYLE.md, "The shape of the house"): floors that only go down.

A drawing of the project's imports (every `import` and `from ... import` of a project module, at the top of
a module or inside a function) must have no circle, and no import may run back up: each folder sits on a
floor and imports only folders on lower floors (or its own). Nothing imports an app, a benchmark, a pipeline
or a script except the entry points. And the size smell tests: no module over 350 lines, no function over
80, every folder's __init__.py says in one line what it is for, no library module touches sys.path.

    python -m pytest tests/test_layout.py -q
"""
import ast

import pytest

from factories import REPO

# the floor of each folder; a module imports only folders on a lower floor, or its own folder
FLOORS = {
    "core": 0,
    "model": 1, "tokenizer": 1,
    "checkpoint": 2,
    "interop": 3,
    "inference": 4, "dataset": 4,
    "trainer": 5, "chat": 5,
    "selection": 6, "evaluation": 6, "serving": 6,
    "rewards": 7,
    "apps": 8, "bench": 8, "pipelines": 8,
}
TOPS = {"apps", "bench", "pipelines", "scripts"}          # what a person runs: nothing below imports them
MAX_LINES, MAX_FUNCTION = 350, 80


def project_files():
    """Every .py file of the project outside tests/ and out/ -> its module name."""
    files = {}
    for p in sorted(REPO.rglob("*.py")):
        rel = p.relative_to(REPO)
        if rel.parts[0] in ("tests", "out") or any(part.startswith(".") for part in rel.parts):
            continue
        name = ".".join(rel.with_suffix("").parts)
        files[name.removesuffix(".__init__")] = p
    return files


def folder(module):
    return module.split(".")[0] if "." in module else module


def is_entry(module):
    """Entry points: the top-level commands, scripts/*.py and trainer/train_*.py."""
    return "." not in module or folder(module) == "scripts" or module.startswith("trainer.train_")


def imports_of(path, modules):
    """(imported project module, line) for every import in the file, wherever it stands."""
    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import (one style: absolute imports)"
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found += [(m, node.lineno) for m in map(resolve, names) if m]
    return found


@pytest.fixture(scope="module")
def graph():
    modules = project_files()
    return modules, {m: imports_of(p, modules) for m, p in modules.items()}


def test_every_folder_is_on_a_floor(graph):
    modules, _ = graph
    folders = {folder(m) for m in modules if "." in m}
    assert folders - set(FLOORS) - {"scripts"} == set(), "a new folder: give it a floor in FLOORS"


def test_no_import_circle(graph):
    _, edges = graph
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for dep, line in edges[m]:
            if dep == m:
                continue
            if state.get(dep) == "open":
                circle = stack[stack.index(dep):] + [dep]
                pytest.fail("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep, stack + [dep])
        state[m] = "done"
    for m in edges:
        if m not in state:
            visit(m, [m])


def test_imports_only_go_down(graph):
    _, edges = graph
    wrong = []
    for m, deps in edges.items():
        for dep, line in deps:
            a, b = folder(m), folder(dep)
            if a == b or is_entry(m):
                continue
            if b in TOPS or "." not in dep:
                wrong.append(f"{m}:{line} imports {dep}, an app, pipeline, benchmark or script")
            elif a in FLOORS and FLOORS[b] >= FLOORS[a]:
                wrong.append(f"{m}:{line} (floor {FLOORS[a]}) imports {dep} (floor {FLOORS[b]})")
    assert not wrong, "\n".join(wrong)


def test_no_library_module_touches_sys_path(graph):
    modules, _ = graph
    touching = [m for m, p in modules.items() if "sys.path" in p.read_text(encoding="utf-8")]
    assert touching == [], "import through the editable install (pyproject.toml), never through sys.path"


def test_sizes(graph):
    modules, _ = graph
    long_files, long_functions = [], []
    for m, p in modules.items():
        text = p.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_LINES:
            long_files.append(f"{p.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    long_functions.append(f"{p.relative_to(REPO)}:{node.lineno} {node.name}: {n} lines")
    assert not long_files, f"over {MAX_LINES} lines: {long_files}"
    assert not long_functions, f"over {MAX_FUNCTION} lines: {long_functions}"


def test_every_folder_says_what_it_is_for(graph):
    modules, _ = graph
    for name in FLOORS:
        init = REPO / name / "__init__.py"
        assert init.is_file(), f"{name}/ has no __init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) == 1, f"{init}: a one-line docstring says what the folder is for"

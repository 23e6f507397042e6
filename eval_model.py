"""Talk to a trained TinyMind model in the terminal, or test it automatically.

    python eval_model.py --model_mode 1                              # full SFT model: auto test, then chat
    python eval_model.py --lora_name lora_music --model_mode 1       # the LoRA on the base it was trained on
    python eval_model.py --prompt "Who are you?" --prompt "你是谁？"    # answer and exit
    echo "Who are you?" | python eval_model.py                       # one prompt per line from stdin
    python eval_model.py --lora_name lora_music --identity_test      # held-out identity questions
    python eval_model.py --lora_name lora_music --task_test dataset/music_test.jsonl
    python eval_model.py --load 1 --hf_path path/to/hf_model         # a Hugging Face folder, imported in memory

Sampling is THE loop of model/generate.py. Models are out/{pretrain|full_sft}_{hidden}.pth and adapters
out/lora/{lora_name}_{hidden}.pth; an adapter is loaded onto the base recorded in it. Tests are greedy by
default and write a JSON report under out/eval/.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # repo root

import torch  # noqa: E402

from model.chat_session import candidates, find_adapters, model_info, trim_history  # noqa: E402
from model.checkpoint import ADAPTER_FORMAT, default_out_dir, load_model, read_pth, repo_root  # noqa: E402
from model.errors import UserError, run_cli  # noqa: E402
from model.generate import chat, generate, stream_generate  # noqa: E402
from model.tokenizer import encode_chat  # noqa: E402
from dataset.scoring import identity_verdict, task_verdict  # noqa: E402

STAGES = {0: "pretrain", 1: "full_sft"}
MAKE_CMD = {"pretrain": "python trainer/train_pretrain.py --hidden_size {h}",
            "full_sft": "python trainer/train_full_sft.py --hidden_size {h}"}
DEFAULT_IDENTITY_TEST = repo_root() / "dataset" / "identity_test.jsonl"

PROMPTS = {
    "pretrain": ["The capital of France is", "Music is the art of", "Once upon a time, there was a",
                 "人工智能是", "中国的首都是", "音乐是一种"],
    "full_sft": ["Who are you?", "What is the capital of France?", "Give me three tips for staying healthy.",
                 "Explain what a neural network is in one sentence.", "你是谁？", "请用一句话介绍一下长城。",
                 "推荐一本好书。", "What is a piano?"],
}



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lora_name", default=None, help="adapter out/lora/{lora_name}_{hidden}.pth (e.g. lora_music)")
    p.add_argument("--model_mode", type=int, choices=(0, 1), default=None,
                   help="0 pretrain, 1 full SFT (default 1); for a LoRA the adapter's recorded base is used")
    p.add_argument("--out_dir", default=None, help="where checkpoints are (default: <repo>/out)")
    p.add_argument("--ckpt", default=None, help="a checkpoint or adapter .pth file, instead of the names above")
    p.add_argument("--load", type=int, choices=(0, 1), default=0, help="1: load an HF folder given by --hf_path")
    p.add_argument("--hf_path", default=None, help="Hugging Face model folder for --load 1")
    p.add_argument("--hidden_size", type=int, default=None,
                   help="picks *_{hidden}.pth; default: the one candidate in out/ if exactly one, else 512")
    p.add_argument("--num_hidden_layers", type=int, default=None,
                   help="only checked: the checkpoint records its own shape")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy (default 0.85 for chat, 0 for --identity_test/--task_test)")
    p.add_argument("--top_p", type=float, default=0.85)
    p.add_argument("--top_k", type=int, default=0, help="0 = off")
    p.add_argument("--repetition_penalty", type=float, default=1.0)
    p.add_argument("--max_new_tokens", type=int, default=None, help="default 512 for chat, 128 for tests")
    p.add_argument("--history_cnt", type=int, default=None,
                   help="earlier exchanges kept in the chat (default 2 interactively, 0 for --prompt/stdin)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (reproducible answers)")
    p.add_argument("--prompt", action="append", default=[], help="answer this and exit (repeatable)")
    p.add_argument("--prompts_file", default=None,
                   help="prompts for the automatic test: JSONL conversations or one prompt per line")
    p.add_argument("--identity_test", nargs="?", const=str(DEFAULT_IDENTITY_TEST), default=None, metavar="FILE",
                   help=f"held-out identity questions (default file {DEFAULT_IDENTITY_TEST.relative_to(repo_root())})")
    p.add_argument("--task_test", action="append", default=[], metavar="FILE",
                   help="JSONL conversations (question, reference answer) + optional 'answers' aliases (repeatable)")
    p.add_argument("--report", default=None,
                   help="JSON report path when one test runs (default out/eval/{test}_{model}.json)")
    p.add_argument("--batch_size", type=int, default=16, help="questions answered together in the tests")
    p.add_argument("--force", action="store_true", help="load an adapter even if its base file changed")
    return p.parse_args(argv)



def resolve_user_path(path):
    """A path as given, else relative to the repository root."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    return repo_root() / p if (repo_root() / p).exists() else p


def pick_hidden(args, folder, stem):
    """--hidden_size, else the one *_{hidden}.pth candidate, else 512. Returns (hidden, path)."""
    found = candidates(folder, stem)
    if args.hidden_size is not None:
        match = [p for h, p in found if h == args.hidden_size]
        return args.hidden_size, (match[0] if match else None), found
    if len(found) == 1:
        return found[0][0], found[0][1], found
    match = [p for h, p in found if h == 512]
    return 512, (match[0] if match else None), found


def load(args):
    """-> (model, tokenizer, info dict, label)."""
    out_dir = Path(args.out_dir).expanduser() if args.out_dir else default_out_dir()
    if args.load == 1:
        if not args.hf_path:
            raise UserError("--load 1 needs --hf_path DIR (a Hugging Face model folder)")
        from model.convert import load_hf_model       # imported only when asked for
        model, tokenizer, ckpt = load_hf_model(args.hf_path, device=args.device)
        return model.eval(), tokenizer, model_info(model, ckpt, path=args.hf_path), Path(args.hf_path).name

    if args.ckpt:
        path = resolve_user_path(args.ckpt)
        obj = read_pth(path)
        if isinstance(obj, dict) and obj.get("format") == ADAPTER_FORMAT:
            return load_adapter_model(args, path)
        del obj
        model, tokenizer, ckpt = load_model(path, device=args.device)
        return model, tokenizer, model_info(model, ckpt, path=path), path.stem

    if args.lora_name:
        lora_dir = out_dir / "lora"
        hidden, path, found = pick_hidden(args, lora_dir, args.lora_name)
        if path is None:
            have = ", ".join(p.stem for p in find_adapters(out_dir)) or "none"
            what = (f"adapter {args.lora_name!r} with hidden size {hidden}" if found
                    else f"no adapter named {args.lora_name!r}")
            raise UserError(f"{what} in {lora_dir} (adapters there: {have}); train one with "
                            f"`python trainer/train_lora.py --lora_name {args.lora_name} "
                            f"--data_path ../dataset/music.jsonl`")
        return load_adapter_model(args, path)

    stage = STAGES[1 if args.model_mode is None else args.model_mode]
    hidden, path, found = pick_hidden(args, out_dir, stage)
    if path is None:
        others = f" (found {', '.join(p.name for _, p in found)}; pick one with --hidden_size)" if found else ""
        raise UserError(f"{out_dir / f'{stage}_{hidden}.pth'} not found{others}; make it with "
                        f"`{MAKE_CMD[stage].format(h=hidden)}` or run `python scripts/quickstart.py`")
    model, tokenizer, ckpt = load_model(path, device=args.device)
    check_shape(args, ckpt, path)
    return model, tokenizer, model_info(model, ckpt, path=path), path.stem


def load_adapter_model(args, path):
    from model.lora import load_model_with_adapter, merge_lora
    out_dir = Path(args.out_dir).expanduser() if args.out_dir else None     # where else the base may be
    model, tokenizer, base_ckpt, adapter = load_model_with_adapter(path, device=args.device, force=args.force,
                                                                   out_dir=out_dir)
    merge_lora(model)                                  # same outputs, no extra matmuls per token
    model.eval()
    base = adapter.get("base", {}).get("path", "?")
    base_stage = base_ckpt.get("meta", {}).get("stage")
    if args.model_mode is not None and base_stage and STAGES[args.model_mode] != base_stage:
        print(f"warning: --model_mode {args.model_mode} ({STAGES[args.model_mode]}) but {path.name} was "
              f"trained on {base} ({base_stage}); loaded that base", file=sys.stderr)
    check_shape(args, base_ckpt, path)
    info = model_info(model, base_ckpt, adapter, path=base, adapter_path=path)
    info["adapter"]["meta"] = adapter.get("meta", {})
    return model, tokenizer, info, path.stem


def check_shape(args, ckpt, path):
    layers = ckpt.get("config", {}).get("num_hidden_layers")
    if args.num_hidden_layers is not None and layers != args.num_hidden_layers:
        print(f"warning: --num_hidden_layers {args.num_hidden_layers} but {path} has {layers} layers; "
              "using the checkpoint's", file=sys.stderr)



def read_conversations(path, kind="any"):
    """JSONL records (any accepted format) -> list of dicts with "conversations"."""
    from dataset.formats import iter_jsonl
    path = resolve_user_path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    return [rec for _, rec in iter_jsonl(path, kind=kind) if "conversations" in rec]


def read_prompts_file(path):
    """A JSONL file of conversations (first user turn) or plain text, one prompt per line."""
    path = resolve_user_path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if lines and lines[0].startswith("{"):
        return [first_user(r["conversations"]) for r in read_conversations(path)]
    return lines


def first_user(conversations):
    return next(m["content"] for m in conversations if m["role"] == "user")


def auto_prompts(args, info, n=8):
    """Prompts for the automatic test: --prompts_file, an adapter's validation data, or a built-in list."""
    if args.prompts_file:
        return read_prompts_file(args.prompts_file)
    if info.get("adapter"):
        meta = info["adapter"].get("meta") or {}
        for cand in (meta.get("val_path"), (meta.get("train_config") or {}).get("val_data")):
            if cand and resolve_user_path(cand).is_file():
                try:
                    prompts = [first_user(r["conversations"]) for r in read_conversations(cand)]
                except UserError:
                    continue
                if prompts:
                    step = max(1, len(prompts) // n)
                    return prompts[::step][:n]
    return PROMPTS["pretrain" if info.get("stage") == "pretrain" else "full_sft"]



def sampling(args, test=False):
    temperature = args.temperature if args.temperature is not None else (0.0 if test else 0.85)
    s = dict(temperature=temperature, top_p=args.top_p, top_k=args.top_k,
             repetition_penalty=args.repetition_penalty, seed=args.seed)
    s["max_new_tokens"] = args.max_new_tokens or (128 if test else 512)
    return s


def is_pretrain(info):
    return info.get("stage") == "pretrain"


def prompt_ids(tokenizer, info, messages, system):
    if is_pretrain(info):          # a pretrained model continues text: no chat template
        ids = tokenizer.encode(messages[-1]["content"])
        return ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + ids
    ids, _ = encode_chat(tokenizer, messages, add_generation_prompt=True, system_prompt=system)
    return ids


def answer_batch(model, tokenizer, info, questions, args, batch_size):
    """Answers (text) to a list of message lists, in batches, greedy unless --temperature."""
    s = sampling(args, test=True)
    answers = []
    for i in range(0, len(questions), batch_size):
        chunk = [prompt_ids(tokenizer, info, q, args.system) for q in questions[i:i + batch_size]]
        outs = generate(model, chunk, stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id, **s)
        answers.extend(tokenizer.decode(o).strip() for o in outs)
        print(f"  {min(i + batch_size, len(questions))}/{len(questions)} answered", file=sys.stderr, flush=True)
    return answers


def write_report(args, kind, label, data):
    out_dir = Path(args.out_dir).expanduser() if args.out_dir else default_out_dir()
    path = Path(args.report) if args.report else out_dir / "eval" / f"{kind}_{label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    print(f"report: {path}")
    return path


def read_identity_test(path):
    records = read_conversations(path, kind="any")
    if not records:
        raise UserError(f"{path}: no questions in the file")
    return records


def read_task_test(path):
    records = read_conversations(path, kind="chat")
    if not records:
        raise UserError(f"{path}: no question/answer conversations in the file")
    return records


def run_identity_test(model, tokenizer, info, label, args, records):
    questions, names = [], []
    for rec in records:
        conv = [m for m in rec["conversations"] if m["role"] != "assistant"][:2]
        questions.append(conv)
        names.append((rec.get("expect") or {}).get("name", "TinyMind"))
    answers = answer_batch(model, tokenizer, info, questions, args, args.batch_size)
    results, passed = [], 0
    for q, name, a in zip(questions, names, answers):
        ok, why = identity_verdict(a, name)
        passed += ok
        print(f"[{'PASS' if ok else 'FAIL'}] {first_user(q)}\n       -> {a[:200]!r}" + ("" if ok else f"  ({why})"))
        results.append({"question": first_user(q), "answer": a, "expect": name, "pass": ok, "reason": why})
    rate = passed / len(results)
    print(f"identity test ({label}): {passed}/{len(results)} passed = {rate:.1%}")
    write_report(args, "identity", label, report_body("identity", args.identity_test, info, args, passed,
                                                      len(results), results))
    return rate


def run_task_test(model, tokenizer, info, label, args, file, records):
    questions, refs = [], []
    for rec in records:
        conv = rec["conversations"]
        questions.append(conv[:-1])
        aliases = rec.get("answers") or []
        refs.append([conv[-1]["content"]] + [str(a) for a in (aliases if isinstance(aliases, list) else [aliases])])
    answers = answer_batch(model, tokenizer, info, questions, args, args.batch_size)
    results, correct = [], 0
    for q, ref, a in zip(questions, refs, answers):
        ok, matched = task_verdict(a, ref)
        correct += ok
        print(f"[{'OK' if ok else 'XX'}] {q[-1]['content'][:100]}\n     -> {a[:160]!r}"
              + ("" if ok else f"  (expected {ref[0][:80]!r}{' or an alias' if len(ref) > 1 else ''})"))
        results.append({"question": q[-1]["content"], "answer": a, "reference": ref[0], "aliases": ref[1:],
                        "correct": ok, "matched": matched})
    acc = correct / len(results)
    print(f"task test ({label}, {Path(file).name}): {correct}/{len(results)} correct = {acc:.1%}")
    write_report(args, f"task_{Path(file).stem}", label,
                 report_body("task", file, info, args, correct, len(results), results))
    return acc


def report_body(kind, file, info, args, good, n, results):
    return {"kind": kind, "file": str(file), "model": info, "sampling": sampling(args, test=True),
            "n": n, "passed": good, "rate": good / n, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "results": results}


def reply(model, tokenizer, info, messages, args, s):
    """Stream one answer to stdout; return its text."""
    if is_pretrain(info):
        pieces = stream_generate(model, tokenizer, prompt_ids(tokenizer, info, messages, None), **s)
    else:
        pieces = chat(model, tokenizer, messages, system_prompt=args.system, **s)
    text = []
    for piece in pieces:
        text.append(piece)
        print(piece, end="", flush=True)
    print(flush=True)
    return "".join(text)


def converse(model, tokenizer, info, prompts, args, history_turns, interactive=False):
    """Answer prompts (an iterable of strings) in order, keeping history_turns earlier exchanges."""
    s = sampling(args)
    history = []
    for prompt in prompts:
        prompt = prompt.strip()
        if not prompt:
            continue
        if interactive and prompt in ("exit", "quit", "/exit", "/quit"):
            break
        if interactive and prompt == "/clear":
            history = []
            print("(history cleared)")
            continue
        if not interactive:
            print(f"> {prompt}")
        messages = trim_history(history, history_turns) + [{"role": "user", "content": prompt}]
        print("🤖: ", end="", flush=True)
        answer = reply(model, tokenizer, info, messages, args, s)
        history = messages + [{"role": "assistant", "content": answer}]
        print()


def tty_prompts():
    while True:
        try:
            yield input("👶: ")
        except EOFError:
            print()
            return


def main(argv=None):
    args = parse_args(argv)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    # read test files first: a bad line is reported before any model is loaded
    identity = read_identity_test(args.identity_test) if args.identity_test else None
    tasks = [(f, read_task_test(f)) for f in args.task_test]
    if args.report and bool(identity) + len(tasks) > 1:
        raise UserError("--report names one file: give it with a single --identity_test or --task_test")
    if args.prompts_file:
        read_prompts_file(args.prompts_file)
    model, tokenizer, info, label = load(args)
    desc = f"{info['checkpoint']} ({info['stage']}, {info['parameters'] / 1e6:.2f}M parameters)"
    if info.get("adapter"):
        desc += f" + adapter {info['adapter']['path']}"
    print(f"model: {desc} on {args.device}", file=sys.stderr)

    if identity or tasks:
        if identity:
            run_identity_test(model, tokenizer, info, label, args, identity)
        for file, records in tasks:
            run_task_test(model, tokenizer, info, label, args, file, records)
        if args.prompt:
            converse(model, tokenizer, info, args.prompt, args, args.history_cnt or 0)
        return
    if args.prompt:
        converse(model, tokenizer, info, args.prompt, args, args.history_cnt or 0)
    elif not sys.stdin.isatty():
        converse(model, tokenizer, info, sys.stdin, args, args.history_cnt or 0)
    else:
        print("automatic test:")
        converse(model, tokenizer, info, auto_prompts(args, info), args, 0)
        turns = 2 if args.history_cnt is None else args.history_cnt
        print(f"chat (keeps {turns} earlier exchanges; /clear forgets them, exit or Ctrl-D ends):")
        converse(model, tokenizer, info, tty_prompts(), args, turns, interactive=True)


if __name__ == "__main__":
    run_cli(main)

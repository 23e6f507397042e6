"""Talk to a trained TinyMind model in the terminal, or test it automatically.

    python eval_model.py --model_mode 1                              # full SFT model: auto test, then chat
    python eval_model.py --lora_name lora_music --model_mode 1       # the LoRA on the base it was trained on
    python eval_model.py --lora_name lora_music --base path/to/full_sft_512.pth   # its base moved elsewhere
    python eval_model.py --prompt "Who are you?" --prompt "你是谁？"    # answer and exit
    echo "Who are you?" | python eval_model.py                       # one prompt per line from stdin
    python eval_model.py --lora_name lora_music --identity_test      # held-out identity questions
    python eval_model.py --model_mode 1 --identity_test --bot_name TinyMind --bot_creator "the TinyMind project"
    python eval_model.py --lora_name lora_music --task_test dataset/music_test.jsonl
    python eval_model.py --load 1 --hf_path path/to/hf_model         # a Hugging Face folder, imported in memory
    python eval_model.py --persona music_tutor --docs dataset/knowledge/music --session alice   # the chatbot
    python eval_model.py --chat_test --persona tinymind --docs dataset/knowledge/music       # its test suite
    python eval_model.py --lora_name lora_music --no_docs --task_test dataset/music_test.jsonl   # no retrieval

A thin command over the modules that do the work: checkpoint/layout.py finds the files (out/{pretrain|full_sft}_
{hidden}.pth, out/lora/{lora_name}_{hidden}.pth), inference/load.py loads them (an adapter onto the base it
records), chat/engine.py builds every chat prompt (persona, retrieval over --docs, else over the knowledge
base the model records (chat.retrieval.default_docs; --no_docs: none), the memory of a --session, the
history fitted to the window), apps/terminal.py chats, evaluation/answer_tests.py runs the tests
and evaluation/chat_suite.py the chat test suite (greedy by default, a JSON report under
out/eval/; strict scorers of evaluation/scoring.py). The identity checked is the one the model records (its
training data's "identity", from scripts/make_identity.py) unless --bot_name/--bot_creator say otherwise.
Sampling is THE loop of inference/generate.py.
"""
import argparse
import sys
from pathlib import Path


import torch

from chat.engine import ChatEngine
from chat.memory import Memory
from chat.persona import load_persona, shipped_personas
from chat.retrieval import default_docs, open_index
from apps.terminal import auto_prompts, auto_test, converse, read_prompts_file, stdin_prompts, tty_prompts
from core.cli import ArgumentParser, check_device, check_range, run_cli
from evaluation.chat_suite import DEFAULT_DOCS, read_suite, run_chat_test
from evaluation.answer_tests import expected_identity, read_test_file, run_identity_test, run_task_test
from checkpoint import layout
from checkpoint.adapter import is_adapter
from checkpoint.pth import read_pth
from core.atomic import check_writable
from core.errors import UserError
from inference.load import load_for_inference
from inference.precision import PRECISIONS, precision_hint
from inference.sampling import CHAT_SAMPLING

STAGES = layout.MODEL_MODES
DEFAULT_IDENTITY_TEST = layout.repo_root() / "dataset" / "identity_test.jsonl"
DEFAULT_CHAT_TEST = layout.repo_root() / "dataset" / "chat_test"


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lora_name", default=None, help="adapter out/lora/{lora_name}_{hidden}.pth (e.g. lora_music)")
    p.add_argument("--model_mode", type=int, choices=sorted(STAGES), default=None,
                   help="MiniMind's numbers: " + ", ".join(f"{k} {v}" for k, v in STAGES.items()) +
                        " (out/{stage}_{hidden}.pth; default 1); for a LoRA the adapter's recorded base is used")
    p.add_argument("--out_dir", default=None, help="where checkpoints are (default: $TINYMIND_OUT_DIR, else <repo>/out)")
    p.add_argument("--ckpt", default=None, help="a checkpoint or adapter .pth file, instead of the names above")
    p.add_argument("--base", default=None, metavar="PATH",
                   help="the checkpoint an adapter (--lora_name, or --ckpt an adapter) is put on, as train_lora.py's "
                        "--base (default: the base the adapter records, else the file of that name in out/)")
    p.add_argument("--load", type=int, choices=(0, 1), default=0, help="1: load an HF folder given by --hf_path")
    p.add_argument("--hf_path", default=None, help="Hugging Face model folder for --load 1")
    p.add_argument("--hidden_size", type=int, default=None,
                   help="picks *_{hidden}.pth; default: the one candidate in out/ if exactly one, else 512")
    p.add_argument("--num_hidden_layers", type=int, default=None,
                   help="only checked: the checkpoint records its own shape")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1")
    p.add_argument("--dtype", choices=PRECISIONS, default="float32",
                   help="precision: int8 (weights quantised at load time) decodes fastest on a CPU, bfloat16 "
                        "where the CPU has AVX512-BF16/AMX or on a GPU; float32 is exact (default)")
    p.add_argument("--temperature", type=float, default=None,
                   help=f"0 = greedy (default {CHAT_SAMPLING['temperature']:g}: THE chat default, "
                        "inference/sampling.py CHAT_SAMPLING; the tests: 0)")
    p.add_argument("--top_p", type=float, default=CHAT_SAMPLING["top_p"], help="1 = off (default %(default)s)")
    p.add_argument("--top_k", type=int, default=CHAT_SAMPLING["top_k"], help="0 = off (default %(default)s)")
    p.add_argument("--repetition_penalty", type=float, default=CHAT_SAMPLING["repetition_penalty"],
                   help="1 = off (default %(default)s)")
    p.add_argument("--max_new_tokens", type=int, default=None, help="default 512 for chat, 128 for tests")
    p.add_argument("--history_cnt", type=int, default=None,
                   help="earlier exchanges kept in the chat at most (default: as many as the window holds "
                        "interactively, 0 for --prompt/stdin, where each line is answered on its own)")
    p.add_argument("--system", default=None, help="system prompt (after the persona's, with --persona)")
    p.add_argument("--persona", default=None, metavar="FILE",
                   help="a persona YAML file, or a shipped one's name: " + ", ".join(shipped_personas()))
    p.add_argument("--docs", default=None, metavar="DIR",
                   help="answer from these documents (.txt, .md, .jsonl, .pdf): the top passages go into the "
                        "prompt, their sources are shown (index cached under out/index/); default: the knowledge "
                        "base the model was trained to answer from, if it records one (the music bot's "
                        "dataset/knowledge/music)")
    p.add_argument("--no_docs", action="store_true",
                   help="no retrieval: not from the knowledge base the model records either (the adapter alone)")
    p.add_argument("--docs_k", type=int, default=3, help="passages retrieved per message (with retrieval)")
    p.add_argument("--session", default=None, metavar="NAME",
                   help="long-term memory: exchanges kept in out/memory/NAME.jsonl, across runs; the most "
                        "relevant come back into the prompt")
    p.add_argument("--memory_k", type=int, default=2, help="remembered exchanges recalled per message")
    p.add_argument("--chat_test", nargs="?", const=str(DEFAULT_CHAT_TEST), default=None, metavar="DIR",
                   help="the chatbot test suite: persona, retrieval, memory, multi-turn, refusal "
                        f"(default question sets {DEFAULT_CHAT_TEST.relative_to(layout.repo_root())}/)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (reproducible answers)")
    p.add_argument("--prompt", action="append", default=[], help="answer this and exit (repeatable)")
    p.add_argument("--prompts_file", default=None,
                   help="prompts for the automatic test: JSONL conversations or one prompt per line")
    p.add_argument("--identity_test", nargs="?", const=str(DEFAULT_IDENTITY_TEST), default=None, metavar="FILE",
                   help=f"held-out identity questions (default file {DEFAULT_IDENTITY_TEST.relative_to(layout.repo_root())})")
    p.add_argument("--task_test", action="append", default=[], metavar="FILE",
                   help="JSONL conversations (question, reference answer) + 'answers' (the gold answers) (repeatable)")
    p.add_argument("--bot_name", default=None,
                   help="the name identity answers must give (default: the one the model records)")
    p.add_argument("--bot_creator", default=None,
                   help="who made it, for creator questions (default: the one the model records)")
    p.add_argument("--bot_creator_zh", default=None, help="the creator as Chinese answers write it")
    p.add_argument("--report", default=None,
                   help="JSON report path when one test runs (default out/eval/{test}_{model}.json; an earlier "
                        "report there of another model is kept as {test}_{model}_{hash}.json)")
    p.add_argument("--batch_size", type=int, default=16, help="questions answered together in the tests")
    p.add_argument("--force", action="store_true", help="load an adapter even if its base file changed")
    return check_args(p.parse_args(argv))


def as_text(s):
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def check_args(args):
    """Every value range-checked before anything is loaded: one line naming the flag."""
    check_device(args.device)
    if args.seed is not None:
        check_range("--seed", args.seed, 0, 2**32 - 1, integer=True)
    # a prompt from the shell that is not UTF-8 (a stray \xff) keeps its text, the bad bytes become U+FFFD
    args.prompt = [as_text(p) for p in args.prompt]
    for flag in ("system", "bot_name", "bot_creator", "bot_creator_zh"):
        value = getattr(args, flag)
        if value is not None:
            setattr(args, flag, as_text(value))
            if flag != "system" and not value.strip():
                raise UserError(f"--{flag} must not be empty")
    if args.temperature is not None:
        check_range("--temperature", args.temperature, 0.0)
    check_range("--top_p", args.top_p, 0.0, 1.0, low_open=True)
    check_range("--top_k", args.top_k, 0, integer=True)
    check_range("--repetition_penalty", args.repetition_penalty, 0.0, low_open=True)
    check_range("--batch_size", args.batch_size, 1, 4096, integer=True)
    check_range("--docs_k", args.docs_k, 1, 50, integer=True)
    if args.docs and args.no_docs:
        raise UserError("--docs and --no_docs: give one (--docs DIR retrieves from DIR, --no_docs from nothing)")
    check_range("--memory_k", args.memory_k, 0, 50, integer=True)
    for flag in ("max_new_tokens", "hidden_size", "num_hidden_layers"):
        if getattr(args, flag) is not None:
            check_range(f"--{flag}", getattr(args, flag), 1, integer=True)
    if args.history_cnt is not None:
        check_range("--history_cnt", args.history_cnt, 0, integer=True)
    if args.report:
        check_writable(layout.resolve_input(args.report))
    if args.base is not None:
        args.base = layout.resolve_input(args.base)
        if not args.base.is_file():
            raise UserError(f"--base {args.base}: file not found")
        if args.load == 1:
            raise UserError("--base goes with an adapter (--lora_name or --ckpt), not with --load 1")
    return args


def load(args):
    """The model the flags name -> inference.load.Loaded."""
    out = layout.out_dir(args.out_dir)
    common = dict(device=args.device, force=args.force, out=out, dtype=args.dtype)
    hint = precision_hint(args.dtype, args.device)
    if hint:
        print(hint)
    if args.load == 1:
        if not args.hf_path:
            raise UserError("--load 1 needs --hf_path DIR (a Hugging Face model folder)")
        return load_for_inference(hf_path=args.hf_path, device=args.device, dtype=args.dtype)
    if args.ckpt:
        ckpt = layout.resolve_input(args.ckpt)
        if args.base and not is_adapter(read_pth(ckpt, mmap=True)):
            raise UserError(f"--base: {ckpt} is a full checkpoint, not an adapter; --base names the checkpoint an "
                            "adapter is put on: drop it, or give the adapter with --ckpt or --lora_name")
        loaded = load_for_inference(ckpt=ckpt, base=args.base, **common)
    elif args.lora_name:
        loaded = load_for_inference(adapter=layout.find_adapter(out, args.lora_name, args.hidden_size), base=args.base,
                                    **common)
    else:
        if args.base:
            raise UserError("--base names the checkpoint an adapter is put on: give the adapter with --lora_name or "
                            "--ckpt, or load the checkpoint itself with --ckpt")
        stage = STAGES[1 if args.model_mode is None else args.model_mode]
        path = layout.find_stage_checkpoint(out, stage, args.hidden_size, flag_hint="--hidden_size or --ckpt")
        loaded = load_for_inference(ckpt=path, **common)
    warn_mismatch(args, loaded)
    return loaded


def warn_mismatch(args, loaded):
    """--model_mode and --num_hidden_layers only check: the files record what they are."""
    info = loaded.info
    chat_import = args.model_mode == 1 and info["stage"] == "imported"     # an imported instruct model chats
    if info.get("adapter") and args.model_mode is not None and STAGES[args.model_mode] != info["stage"] \
            and not chat_import:
        print(f"warning: --model_mode {args.model_mode} ({STAGES[args.model_mode]}) but "
              f"{Path(info['adapter']['path']).name} was trained on {info['checkpoint']} ({info['stage']}); "
              "loaded that base", file=sys.stderr)
    layers = info["config"].get("num_hidden_layers")
    if args.num_hidden_layers is not None and layers != args.num_hidden_layers:
        print(f"warning: --num_hidden_layers {args.num_hidden_layers} but {info['checkpoint']} has {layers} "
              "layers; using the checkpoint's", file=sys.stderr)


def sampling(args, test=False):
    """The sampling settings of the flags: a flag not given, THE chat default (inference.sampling.CHAT_SAMPLING,
    greedy); the tests are greedy whatever that default, with shorter answers."""
    default = 0.0 if test else CHAT_SAMPLING["temperature"]
    temperature = args.temperature if args.temperature is not None else default
    return dict(temperature=temperature, top_p=args.top_p, top_k=args.top_k,
                repetition_penalty=args.repetition_penalty, seed=args.seed,
                max_new_tokens=args.max_new_tokens or (128 if test else 512))


def checked_identity(args, loaded, persona=None):
    """(identity, where it came from) the identity questions are scored against (evaluation.answer_tests): the
    --bot_* flags, else the persona's, else the one the model records."""
    if persona and not (args.bot_name or args.bot_creator or args.bot_creator_zh):
        return persona.identity, f"the persona {persona.path}"
    return expected_identity(loaded, args.bot_name, args.bot_creator, args.bot_creator_zh)


def auto_identity(args, loaded, persona=None):
    """checked_identity for the automatic test, where a model without one is chatted with all the same:
    (None, why) then."""
    try:
        return checked_identity(args, loaded, persona)
    except UserError as e:
        return None, str(e)


def run_tests(args, loaded, identity, tasks, engine):
    out, s = layout.out_dir(args.out_dir), sampling(args, test=True)
    common = dict(out=out, engine=engine, batch_size=args.batch_size, report=args.report)
    if identity:
        expected, source = checked_identity(args, loaded, engine.persona)    # a missing one: one line, first
        run_identity_test(loaded, identity, args.identity_test, s, identity=expected, source=source, **common)
    for file, records in tasks:
        run_task_test(loaded, records, file, s, **common)


def chat_parts(args, suite=None):
    """What the chat engine is given, read and checked before any model loads: (persona, memory, index).
    The documents are indexed here (or their cached index read); the chat test suite without --docs
    retrieves from the shipped knowledge base."""
    persona = load_persona(args.persona) if args.persona else None
    memory = Memory.open(args.session, args.out_dir) if args.session is not None else None
    if memory is not None:
        check_writable(memory.path)
    docs = args.docs or (DEFAULT_DOCS if suite and {"retrieval", "multiturn"} & set(suite) else None)
    index = open_index(docs, args.out_dir) if docs else None
    if index:
        print(f"documents: {index.folder}: {index.describe()}", file=sys.stderr)
    return persona, memory, index


def chat_index(args, loaded, index):
    """The chat's documents index, once the model is loaded: --docs's (opened by chat_parts before loading), else
    the knowledge base the model records, unless --no_docs (chat.retrieval.default_docs); None for none."""
    if args.docs:
        return index
    docs = default_docs(None, loaded.knowledge, args.no_docs)
    if docs is None:
        return None
    index = open_index(docs, args.out_dir)
    print(f"documents: {index.folder}: {index.describe()} (the knowledge base the model records; --no_docs: "
          "none)", file=sys.stderr)
    return index


def make_engine(args, loaded, persona, memory, index, history_cap=None):
    """The chat engine of the flags."""
    engine = ChatEngine(loaded, persona, args.system, index, memory, args.docs_k, args.memory_k, history_cap)
    if persona or index or memory is not None:
        print(f"chat: {engine.describe()}", file=sys.stderr)
    if loaded.continuation and (persona or index or memory is not None):
        print("note: a pretrained model continues text: no persona, documents or memory go into its prompt",
              file=sys.stderr)
    return engine


def main(argv=None):
    args = parse_args(argv)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    # read test files and the chat's parts first: a bad line is reported before any model is loaded
    identity = read_test_file(args.identity_test, "identity") if args.identity_test else None
    tasks = [(f, read_test_file(f, "task")) for f in args.task_test]
    suite = read_suite(args.chat_test) if args.chat_test else None
    if args.report and bool(identity) + len(tasks) + bool(suite) > 1:
        raise UserError("--report names one file: give it with a single --identity_test, --task_test or --chat_test")
    if args.prompts_file:
        read_prompts_file(args.prompts_file)
    if identity or tasks or suite:
        check_writable(layout.report_path(layout.out_dir(args.out_dir), "test", "model"))
    persona, memory, index = chat_parts(args, suite)
    interactive = not args.prompt and sys.stdin is not None and sys.stdin.isatty()
    if args.prompts_file and not interactive and not args.prompt:
        args.prompt = read_prompts_file(args.prompts_file)       # a script's prompts: answer them, then exit
    testing = identity or tasks or suite
    piped = None if args.prompt or interactive or testing else stdin_prompts(sys.stdin)
    loaded = load(args)
    print(f"model: {loaded.describe()} on {args.device}", file=sys.stderr)
    cap = args.history_cnt if args.history_cnt is not None else (None if interactive else 0)
    engine = make_engine(args, loaded, persona, memory, chat_index(args, loaded, index), cap)
    if testing:
        test_engine = ChatEngine(loaded, persona, args.system, engine.index, None, args.docs_k)   # remembers nothing
        run_tests(args, loaded, identity, tasks, test_engine)
        if suite:
            run_chat_test(loaded, suite, sampling(args, test=True), layout.out_dir(args.out_dir), persona=persona,
                          index=index, system=args.system, docs_k=args.docs_k, report=args.report,
                          identity=auto_identity(args, loaded, persona)[0])
    if args.prompt or piped is not None:
        converse(engine, args.prompt or piped, sampling(args))
    elif not testing:
        print("automatic test:")
        auto_test(ChatEngine(loaded, persona, args.system, engine.index, None, args.docs_k),
                  auto_prompts(loaded, args.prompts_file), sampling(args), auto_identity(args, loaded, persona))
        kept = "as many earlier exchanges as the window holds" if cap is None else f"{cap} earlier exchanges"
        print(f"chat (keeps {kept}; /clear forgets them, exit or Ctrl-D ends):")
        converse(engine, tty_prompts(), sampling(args), interactive=True)


if __name__ == "__main__":
    run_cli(main)

"""The terminal chat of eval_model.py: answer prompts one after another (from --prompt, stdin or the
keyboard) through THE chat engine (chat/engine.py: persona, documents, memory, the history fitted to the
window), streaming each reply and then its sources; and the automatic test, which shows each question's
reference answer and the verdict of the strict scorers (evaluation/answer_tests.py judge).

Library module; the command is eval_model.py:
    python eval_model.py --lora_name lora_music --model_mode 1
"""
import io

from chat.engine import sources_line
from evaluation.answer_tests import asked, describe_identity, first_user, judge, last_user, read_conversations, reference
from core.errors import UserError
from checkpoint.layout import resolve_input

PROMPTS = {
    "pretrain": ["The capital of France is", "Music is the art of", "Once upon a time, there was a",
                 "人工智能是", "中国的首都是", "音乐是一种"],
    "chat": ["Who are you?", "What is the capital of France?", "Give me three tips for staying healthy.",
             "Explain what a neural network is in one sentence.", "你是谁？", "请用一句话介绍一下长城。",
             "推荐一本好书。", "What is a piano?"],
}
IDENTITY_PROMPTS = ("Who are you?", "你是谁？")     # built-in prompts the automatic test scores as identity questions
QUIT = ("exit", "quit", "/exit", "/quit")


def read_prompt_records(path):
    """A JSONL file of conversations (records kept whole: their references score the automatic test) or
    plain text, one prompt per line (each as a record, as_record)."""
    path = resolve_input(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if lines and lines[0].startswith("{"):
        return read_conversations(path)
    return [as_record(ln) for ln in lines]


def read_prompts_file(path):
    """The prompts of a prompts file (read_prompt_records): each record's first user turn."""
    return [first_user(r["conversations"]) for r in read_prompt_records(path)]


def as_record(prompt):
    """A plain prompt as a test record: {"conversations": [user]} (+ "ask" for a built-in identity one)."""
    return {"conversations": [{"role": "user", "content": prompt}],
            **({"ask": "name"} if prompt in IDENTITY_PROMPTS else {})}


def auto_prompts(loaded, prompts_file=None, n=8):
    """Records for the automatic test: prompts_file (JSONL records keep their references), an adapter's
    validation data (n of them, spread out), or a built-in list."""
    if prompts_file:
        return read_prompt_records(prompts_file)
    meta = (loaded.info.get("adapter") or {}).get("meta") or {}
    for cand in (meta.get("val_path"), (meta.get("train_config") or {}).get("val_data")):
        if cand and resolve_input(cand).is_file():
            try:
                records = read_conversations(cand)
            except UserError:
                continue
            if records:
                return records[::max(1, len(records) // n)][:n]
    return [as_record(p) for p in PROMPTS["pretrain" if loaded.continuation else "chat"]]


def auto_test(engine, records, sampling, identity=None):
    """The automatic test: answer each record's question (streamed), then show its reference answer and
    the verdict (PASS/FAIL and why, by evaluation.answer_tests.judge: identity questions against identity, a
    (identity, source) pair or None, the others against their gold answers). Nothing is remembered."""
    ident, source = identity or (None, "no identity given")
    print(describe_identity(ident, source) if ident else f"identity: not scored ({source})")
    for rec in records:
        messages = asked(rec["conversations"])
        print(f"> {last_user(messages)}\n🤖: ", end="", flush=True)
        turn = engine.prepare(messages[:-1], messages[-1]["content"], sampling["max_new_tokens"])
        answer = show(engine.stream(turn, **sampling), turn)
        ref = reference(rec)
        if ref is not None:
            print(f"   reference: {ref}")
        ok, why = judge(rec, answer, ident)
        print(f"   [{'-' if ok is None else 'PASS' if ok else 'FAIL'}] {why}\n")


def show(pieces, turn):
    """Stream a reply to stdout, then the sources it was given, what was remembered and what of the history
    was left out (chat.engine's Turn, fitted by inference.prompt); return its text."""
    text = []
    for piece in pieces:
        text.append(piece)
        print(piece, end="", flush=True)
    print(flush=True)
    if turn.passages:
        print(f"   {sources_line(turn.passages)}")
    if turn.recalled:
        print(f"   (remembered {len(turn.recalled)} earlier exchange{'s' * (len(turn.recalled) > 1)}: "
              + "; ".join(repr(t["user"][:60]) for t in turn.recalled) + ")")
    if turn.dropped:
        print(f"   ({turn.dropped} earlier exchange{'s' * (turn.dropped > 1)} left out to fit the window)")
    return "".join(text)


def converse(engine, prompts, sampling, interactive=False):
    """Answer prompts (an iterable of strings) in order through the chat engine, which keeps what of the
    history the window holds (engine.history_cap exchanges at most). Interactively, exit/quit ends and
    /clear forgets the history (a session's long-term memory stays)."""
    history = []
    if interactive and engine.persona and engine.persona.greeting:
        print(f"🤖: {engine.persona.greeting}\n")
    for prompt in prompts:
        prompt = prompt.strip()
        if not prompt:
            continue
        if interactive and prompt in QUIT:
            break
        if interactive and prompt == "/clear":
            history = []
            print("(history cleared" + ("; the session's memory is kept)" if engine.memory is not None else ")"))
            continue
        if not interactive:
            print(f"> {prompt}")
        print("🤖: ", end="", flush=True)
        turn, pieces = engine.reply(history, prompt, **sampling)
        answer = show(pieces, turn)
        history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        print()


def stdin_prompts(stdin):
    """Prompts piped in, one a line; bytes that are not UTF-8 become U+FFFD instead of stopping the run."""
    if stdin is None:
        raise UserError("no standard input (it is closed): give --prompt TEXT, pipe prompts in, or run "
                        "in a terminal")
    if hasattr(stdin, "buffer"):
        stdin = io.TextIOWrapper(stdin.buffer, encoding="utf-8", errors="replace")
    return stdin


def tty_prompts():
    while True:
        try:
            yield input("👶: ")
        except EOFError:
            print()
            return

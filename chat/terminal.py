"""The terminal chat of eval_model.py: answer prompts one after another (from --prompt, stdin or the
keyboard), streaming each reply, keeping a bounded history; and the prompts of the automatic test.

Library module; the command is eval_model.py:
    python eval_model.py --lora_name lora_music --model_mode 1
"""
import io

from chat.history import trim_history
from evaluation.qa import first_user, read_conversations
from model.errors import UserError
from model.generate import chat
from model.paths import resolve_input

PROMPTS = {
    "pretrain": ["The capital of France is", "Music is the art of", "Once upon a time, there was a",
                 "人工智能是", "中国的首都是", "音乐是一种"],
    "chat": ["Who are you?", "What is the capital of France?", "Give me three tips for staying healthy.",
             "Explain what a neural network is in one sentence.", "你是谁？", "请用一句话介绍一下长城。",
             "推荐一本好书。", "What is a piano?"],
}
QUIT = ("exit", "quit", "/exit", "/quit")


def read_prompts_file(path):
    """A JSONL file of conversations (first user turn) or plain text, one prompt per line."""
    path = resolve_input(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if lines and lines[0].startswith("{"):
        return [first_user(r["conversations"]) for r in read_conversations(path)]
    return lines


def auto_prompts(loaded, prompts_file=None, n=8):
    """Prompts for the automatic test: prompts_file, an adapter's validation data, or a built-in list."""
    if prompts_file:
        return read_prompts_file(prompts_file)
    meta = (loaded.info.get("adapter") or {}).get("meta") or {}
    for cand in (meta.get("val_path"), (meta.get("train_config") or {}).get("val_data")):
        if cand and resolve_input(cand).is_file():
            try:
                prompts = [first_user(r["conversations"]) for r in read_conversations(cand)]
            except UserError:
                continue
            if prompts:
                return prompts[::max(1, len(prompts) // n)][:n]
    return PROMPTS["pretrain" if loaded.continuation else "chat"]


def reply(loaded, messages, system, sampling):
    """Stream one answer to stdout; return its text."""
    text = []
    for piece in chat(loaded.model, loaded.tokenizer, messages, system_prompt=system,
                      continuation=loaded.continuation, **sampling):
        text.append(piece)
        print(piece, end="", flush=True)
    print(flush=True)
    return "".join(text)


def converse(loaded, prompts, sampling, system=None, history_turns=0, interactive=False):
    """Answer prompts (an iterable of strings) in order, keeping history_turns earlier exchanges.
    Interactively, exit/quit ends and /clear forgets the history."""
    history = []
    for prompt in prompts:
        prompt = prompt.strip()
        if not prompt:
            continue
        if interactive and prompt in QUIT:
            break
        if interactive and prompt == "/clear":
            history = []
            print("(history cleared)")
            continue
        if not interactive:
            print(f"> {prompt}")
        messages = trim_history(history, history_turns) + [{"role": "user", "content": prompt}]
        print("🤖: ", end="", flush=True)
        answer = reply(loaded, messages, system, sampling)
        history = messages + [{"role": "assistant", "content": answer}]
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

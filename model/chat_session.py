"""What eval_model.py and the web demo share around THE sampling loop (model/generate.py): finding
checkpoints and adapters in out/, keeping a bounded chat history, and describing a loaded model.

Library module, no command; used as
    from model.chat_session import find_checkpoints, trim_history
"""
import re
from pathlib import Path

from .errors import UserError

NAME_RE = re.compile(r"^(?P<stem>.+)_(?P<hidden>\d+)(?P<moe>_moe)?\.pth$")


def is_weights_file(path):
    """A finished .pth file (not a hidden temporary name left by an atomic write)."""
    return path.is_file() and path.suffix == ".pth" and not path.name.startswith(".")


def find_checkpoints(out_dir):
    """Full-model checkpoints directly in out_dir, sorted by name."""
    out_dir = Path(out_dir)
    return sorted(p for p in out_dir.glob("*.pth") if is_weights_file(p)) if out_dir.is_dir() else []


def find_adapters(out_dir):
    """LoRA adapters in out_dir/lora, sorted by name."""
    lora_dir = Path(out_dir) / "lora"
    return sorted(p for p in lora_dir.glob("*.pth") if is_weights_file(p)) if lora_dir.is_dir() else []


def candidates(folder, stem):
    """Files folder/{stem}_{hidden}[_moe].pth -> list of (hidden_size, path)."""
    found = []
    for p in sorted(Path(folder).glob(f"{glob_escape(stem)}_*.pth")):
        m = NAME_RE.match(p.name)
        if m and m["stem"] == stem and is_weights_file(p):
            found.append((int(m["hidden"]), p))
    return found


def glob_escape(s):
    return re.sub(r"([*?\[])", r"[\1]", s)


def inside(out_dir, path):
    """path resolved, refused unless it lies inside out_dir (symlinks and '..' included)."""
    root = Path(out_dir).resolve()
    p = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    if p != root and root not in p.parents:
        raise UserError(f"{path}: only files under {root} can be opened")
    return p


def trim_history(messages, turns):
    """The last `turns` user/assistant exchanges of a history (system messages dropped: the caller
    passes the system prompt separately)."""
    msgs = [m for m in messages if m["role"] != "system"]
    if turns <= 0:
        return []
    # keep whole exchanges: count user messages from the end
    users, start = 0, len(msgs)
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i]["role"] == "user":
            users += 1
            if users > turns:
                break
            start = i
    return msgs[start:]


def model_info(model, ckpt, adapter=None, path=None, adapter_path=None):
    """A plain dict describing a loaded model (for printing and the demo's info panel)."""
    meta = ckpt.get("meta", {}) if isinstance(ckpt, dict) else {}
    info = {"checkpoint": str(path) if path else meta.get("path", "?"),
            "stage": meta.get("stage", "?"), "step": meta.get("step"),
            "parameters": model.num_parameters() if hasattr(model, "num_parameters")
            else sum(p.numel() for p in model.parameters()),
            "config": dict(ckpt.get("config", {})) if isinstance(ckpt, dict) else {}}
    if adapter is not None:
        ameta = adapter.get("meta", {})
        info["adapter"] = {"path": str(adapter_path) if adapter_path else "?",
                           "base": adapter.get("base", {}).get("path"),
                           "step": ameta.get("step"),
                           "lora_config": adapter.get("lora_config")}
    return info

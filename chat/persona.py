"""Personas: a character for the chatbot, from a YAML file (a "virtual human"), and the system prompt it
becomes. eval_model.py --persona, the web demo's picker, the server's --persona and make_identity.py
--persona all read personas with load_persona; the system prompt is persona_prompt, put into THE chat
template by inference.prompt.build_prompt like any system prompt.

    from chat.persona import load_persona, persona_prompt
    p = load_persona("personas/music_tutor.yaml")      # or a shipped name: load_persona("music_tutor")
    system = persona_prompt(p)

A persona file (personas/*.yaml are shipped; every field but name and creator may be left out):
    name: Melody                       # what it calls itself
    creator: Ada Lab                   # who made it
    creator_zh: Ada 实验室               # the creator as Chinese answers write it (default: creator)
    personality: patient and warm      # one line
    speaking_style: short sentences    # one line
    background: [a list of facts about itself]
    greeting: Hi, I'm Melody!          # the first line shown in a chat
    examples: [{user: ..., assistant: ...}]  # example exchanges, in the prompt
    decline: how it says no to a harmful or impossible request
"""
from dataclasses import dataclass, field

from core.errors import UserError
from checkpoint.layout import repo_root, resolve_input

PERSONA_DIR = repo_root() / "personas"
TEXT_FIELDS = ("name", "creator", "creator_zh", "personality", "speaking_style", "greeting", "decline")
FIELDS = TEXT_FIELDS + ("background", "examples")


@dataclass
class Persona:
    name: str
    creator: str
    creator_zh: str = ""
    personality: str = ""
    speaking_style: str = ""
    background: list = field(default_factory=list)
    greeting: str = ""
    examples: list = field(default_factory=list)     # [{"user": ..., "assistant": ...}]
    decline: str = ""
    path: str = ""                                  # the file it came from

    @property
    def identity(self):
        """{"name", "creator", "creator_zh"}: what the identity scorers check and make_identity.py teaches."""
        return {"name": self.name, "creator": self.creator, "creator_zh": self.creator_zh or self.creator}


def shipped_personas():
    """{name: path} of the persona files under personas/, sorted by name."""
    return {p.stem: p for p in sorted(PERSONA_DIR.glob("*.yaml"))}


def persona_file(spec):
    """A --persona value -> its file: a path, else the name of a shipped persona (music_tutor)."""
    path = resolve_input(spec)
    if path.is_file():
        return path
    shipped = shipped_personas()
    if str(spec) in shipped:
        return shipped[str(spec)]
    raise UserError(f"--persona {spec}: no such file, and no shipped persona of that name (shipped: "
                    f"{', '.join(shipped) or 'none'}; see personas/)")


def load_persona(spec):
    """A persona file (or a shipped persona's name) -> Persona; a bad file is one line naming the field."""
    import yaml
    path = persona_file(spec)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the persona file ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e}); "
                        "see personas/tinymind.yaml for the format") from None
    return check_persona(data, path)


def check_persona(data, path):
    def bad(what):
        return UserError(f"{path}: {what}; see personas/tinymind.yaml for the format")

    if not isinstance(data, dict):
        raise bad("a persona file is a mapping of fields (name: ..., creator: ...)")
    unknown = sorted(set(map(str, data)) - set(FIELDS))
    if unknown:
        raise bad(f"unknown field {unknown[0]!r} (the fields: {', '.join(FIELDS)})")
    for key in ("name", "creator"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise bad(f"the field {key!r} is missing or empty")
    values = {}
    for key in TEXT_FIELDS:
        value = data.get(key) if data.get(key) is not None else ""
        if not isinstance(value, (str, int, float)):
            raise bad(f"the field {key!r} must be a line of text")
        values[key] = str(value).strip()
    background = data.get("background") or []
    if isinstance(background, str):
        background = [background]
    if not isinstance(background, list) or not all(isinstance(b, str) for b in background):
        raise bad("the field 'background' must be a list of lines of text")
    examples = data.get("examples") or []
    if not isinstance(examples, list):
        raise bad("the field 'examples' must be a list of {user: ..., assistant: ...}")
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict) or set(ex) != {"user", "assistant"} or \
                not all(isinstance(v, str) and v.strip() for v in ex.values()):
            raise bad(f"examples[{i}] must be {{user: text, assistant: text}}, both non-empty")
    return Persona(background=[b.strip() for b in background if b.strip()],
                   examples=[{k: v.strip() for k, v in ex.items()} for ex in examples], path=str(path), **values)


def persona_prompt(persona):
    """The system prompt a persona becomes: who it is, its manner, its facts, how it declines, examples."""
    p = persona
    lines = [f"You are {p.name}, an AI assistant created by {p.creator}."
             + (f" In Chinese, your creator is {p.creator_zh}." if p.creator_zh and p.creator_zh != p.creator else "")]
    if p.personality:
        lines.append(f"Personality: {p.personality}")
    if p.speaking_style:
        lines.append(f"Speaking style: {p.speaking_style}")
    lines += [f"- {fact}" for fact in p.background]
    if p.decline:
        lines.append(f"If asked for something harmful, dangerous or illegal, decline: {p.decline}")
    lines.append(f"Always stay {p.name}; never claim to be another assistant.")
    for ex in p.examples:
        lines.append(f"Example - User: {ex['user']} / {p.name}: {ex['assistant']}")
    return "\n".join(lines)

"""THE rewards of reinforcement learning (trainer/train_grpo.py): plain Python functions that take the
completions (text) and, for each, its prompt's record (the JSONL line's fields, plus "_tokens": the
completion's token count, "_finished": whether it ended with an end token, "_max_tokens": its limit) and
return one float per completion. A run weighs several (--reward NAME[:weight], repeatable); a user's own
is --reward module:function[:weight].

    answer      1 when a gold of the record's "answers" occurs in the answer as a whole phrase outside a
                negation (evaluation/scoring.task_verdict, the strict scorer of the task tests), else 0
    identity    1 when the answer affirms the record's "identity" {"name", "creator"} for what its "ask"
                asks (evaluation/scoring.identity_verdict), else 0
    arithmetic  1 when the answer's last number is the exact result ("answers") and every other number in
                it is one of the question's "operands" (a second candidate result fails), else 0
    format      1 when the completion is an answer, optionally after one <think>...</think> block at its
                start, with no other think tag; else 0
    length      DAPO's soft overlong penalty: 0 up to 3/4 of the token limit, falling linearly to -1 at it;
                -1 for a completion cut off at the limit

"The answer" is the completion after its <think>...</think> block, if it has one. Library module:
    from rewards.functions import RewardSet
    rewards = RewardSet.parse(["arithmetic", "format:0.2"])
    total, each = rewards(completions, records)         # (N,) float tensor; {name: (N,) tensor}
"""
import importlib
import importlib.util
import math
import re
from pathlib import Path

import torch

from core.errors import UserError
from evaluation.scoring import identity_verdict, task_golds, task_verdict

THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.S)
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")


def answer_part(text):
    """The answer of a completion: what follows its leading <think>...</think> block, if it has one."""
    m = THINK.match(text)
    return text[m.end():] if m else text


def answer(completions, records):
    return [float(task_verdict(answer_part(c), task_golds(r))[0]) for c, r in zip(completions, records)]


def identity(completions, records):
    out = []
    for c, r in zip(completions, records):
        who = r["identity"]
        out.append(float(identity_verdict(answer_part(c), r.get("ask") or "name", who["name"], who["creator"],
                                          who.get("creator_zh"))[0]))
    return out


def number_value(text):
    value = float(text.replace(",", ""))
    return int(value) if value == int(value) else value


def arithmetic(completions, records):
    out = []
    for c, r in zip(completions, records):
        gold = number_value(str(r["answers"][0]))
        found = [number_value(m) for m in NUMBER.findall(answer_part(c))]
        allowed = {gold, *(number_value(str(o)) for o in r.get("operands", []))}
        out.append(float(bool(found) and found[-1] == gold and all(x in allowed for x in found)))
    return out


def think_format(completions, records):
    out = []
    for c in completions:
        rest = answer_part(c)
        out.append(float(bool(rest.strip()) and "<think>" not in rest and "</think>" not in rest))
    return out


def length(completions, records):
    out = []
    for r in records:
        limit, n = r["_max_tokens"], r["_tokens"]
        soft = limit - max(1, limit // 4)
        out.append(-1.0 if not r["_finished"] else 0.0 - min(1.0, max(0, n - soft) / max(1, limit - soft)))
    return out


# name -> (function, the record fields it reads: every training record must have them)
REWARDS = {"answer": (answer, ("answers",)), "identity": (identity, ("identity",)),
           "arithmetic": (arithmetic, ("answers",)), "format": (think_format, ()), "length": (length, ())}
# what a field must hold for a shipped reward (checked as the data is read) -> the fix, or None
FIELD_CHECKS = {
    "answers": lambda v: None if (isinstance(v, str) and v.strip()) or (isinstance(v, list) and v and all(
        isinstance(a, (str, int, float)) for a in v)) else "a non-empty list of gold answers (or one string)",
    "identity": lambda v: None if isinstance(v, dict) and all(isinstance(v.get(k), str) and v[k].strip()
                                                              for k in ("name", "creator")) else
    'an object with non-empty "name" and "creator" strings'}


def arithmetic_fields(record):
    """The arithmetic reward's own check: its gold answer and operands are numbers."""
    gold = record["answers"][0] if isinstance(record["answers"], list) else record["answers"]
    try:
        number_value(str(gold))
        [number_value(str(o)) for o in record.get("operands", [])]
    except ValueError:
        return 'a number (and "operands" numbers)'
    return None


def import_user_module(module):
    """A module by name (on the Python path), else a file: module.py in the current folder (a dotted name:
    its folders), or a path ending in .py. The file is loaded by itself; the import path is left alone."""
    path = Path(module) if module.endswith(".py") else Path(*module.split(".")).with_suffix(".py")
    if not module.endswith(".py"):
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError:
            if not path.is_file():
                raise
    if not path.is_file():
        raise ImportError(f"no file {path}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_spec(spec):
    """"NAME[:weight]" or "module:function[:weight]" -> (name, function, fields it needs, weight); one line
    naming the flag when the name is unknown, the module cannot be imported or the weight is no number."""
    parts = spec.split(":")
    weight = 1.0
    if len(parts) > 1:
        try:
            weight = float(parts[-1])
            parts = parts[:-1]
        except ValueError:
            pass
    if not math.isfinite(weight):
        raise UserError(f"--reward {spec}: the weight must be a finite number")
    if len(parts) == 1 and parts[0] in REWARDS:
        return parts[0], *REWARDS[parts[0]], weight
    if len(parts) != 2:
        raise UserError(f"--reward {spec}: not one of {', '.join(REWARDS)}, nor module:function[:weight]")
    module, name = parts
    try:
        fn = getattr(import_user_module(module), name)
    except Exception as e:                # whatever the module raises as it loads: one line
        raise UserError(f"--reward {spec}: cannot import {name} from {module} ({type(e).__name__}: {e}); give "
                        "a module on the Python path, or a .py file (a path, or a module name in the current folder)") from None
    if not callable(fn):
        raise UserError(f"--reward {spec}: {module}.{name} is not a function")
    return f"{module}:{name}", fn, tuple(getattr(fn, "fields", ())), weight


class RewardSet:
    """The run's weighted rewards: called on completions and records -> (weighted total, {name: values})."""

    def __init__(self, specs):
        self.items = [parse_spec(s) for s in specs]
        if not self.items:
            raise UserError("give at least one --reward")
        names = [name for name, *_ in self.items]
        if len(set(names)) != len(names):
            raise UserError(f"--reward: {', '.join(n for n in names if names.count(n) > 1)} given twice; one each")

    @classmethod
    def parse(cls, specs):
        return cls(specs)

    @property
    def names(self):
        return [name for name, *_ in self.items]

    def check_record(self, record, where):
        """As the data is read: the record has the fields the rewards read; one line file:line otherwise."""
        for name, _, needs, _ in self.items:
            missing = [f for f in needs if f not in record]
            if missing:
                raise UserError(f"{where}: field {missing[0]!r} missing; --reward {name} reads it (add it, or "
                                "choose rewards this data can be scored by)")
            for f in needs:
                wrong = FIELD_CHECKS[f](record[f]) if f in FIELD_CHECKS and name in REWARDS else None
                wrong = wrong or (arithmetic_fields(record) if name == "arithmetic" else None)
                if wrong:
                    raise UserError(f"{where}: field {f!r} must be {wrong} for --reward {name}")

    def __call__(self, completions, records):
        total, each = torch.zeros(len(completions), dtype=torch.float64), {}
        for name, fn, _, weight in self.items:
            try:
                values = fn(list(completions), list(records))
            except Exception as e:            # a user's reward: its failure is one line, not a traceback
                raise UserError(f"--reward {name} raised {type(e).__name__}: {e}") from None
            values = self.checked(name, values, len(completions))
            each[name] = values
            total += weight * values
        return total, each

    @staticmethod
    def checked(name, values, n):
        try:
            values = torch.as_tensor([float(v) for v in values], dtype=torch.float64)
        except (TypeError, ValueError):
            raise UserError(f"--reward {name} returned {type(values).__name__}, not a list of {n} numbers") from None
        if len(values) != n:
            raise UserError(f"--reward {name} returned {len(values)} values for {n} completions; one each")
        if not torch.isfinite(values).all():
            raise UserError(f"--reward {name} returned {values[~torch.isfinite(values)][0].item()} for a completion; "
                            "a reward is a finite number")
        return values

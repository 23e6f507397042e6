"""docs/training.md's table of every trainer flag, made from trainer/args.py (tests/test_docs.py holds the
page to it). Library module:
    from trainer.flag_table import flag_table
"""
from dataclasses import fields

from trainer.args import ALL, CHOICES, ONLY, STAGE_DEFAULTS, TrainConfig, field_comments


def flag_table():
    """docs/training.md's table of every trainer flag (tests/test_docs.py holds the page to it): the
    stages that take it, the default of each, the --help text."""
    def shown(v):
        return "off" if v is False else "on" if v is True else "(empty)" if v == "" else str(v)
    rows = ["| flag | stages | default | what it does |", "|---|---|---|---|"]
    helps = field_comments()
    for f in fields(TrainConfig):
        stages = ONLY.get(f.name, ALL)
        values = {st: {**TrainConfig().to_dict(), **STAGE_DEFAULTS[st]}[f.name] for st in stages}
        if len(set(map(repr, values.values()))) == 1:
            default = shown(next(iter(values.values())))
        else:
            default = "; ".join(f"{st} {shown(v)}" for st, v in values.items())
        extra = f" (or {', '.join(CHOICES[f.name])})" if f.name == "dtype" else ""
        rows.append(f"| --{f.name} | {'all' if stages == ALL else ', '.join(stages)} | {default} | "
                    f"{helps.get(f.name, '')}{extra} |")
    return "\n".join(rows)

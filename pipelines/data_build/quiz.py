"""bsdgames' quiz files: capitals of countries and US states, chemical elements, collective nouns and young
animals, as SFT questions. Part of `python scripts/build_data.py`.
"""
from pipelines.data_build.packages import find, read_text
from pipelines.data_build.records import conv


def quiz_expand(s):
    """bsdgames quiz syntax -> plain text: {optional} kept, a|b takes the first alternative."""
    out, depth, skip_to = [], 0, None
    i = 0
    while i < len(s):
        ch = s[i]
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if skip_to is not None and depth < skip_to:
                skip_to = None
        elif ch == "|":
            if skip_to is None:
                skip_to = depth  # skip the other alternatives at this level
        elif skip_to is None:
            out.append(ch)
        i += 1
    return "".join(out).strip()


def quiz_rows(dirs, name):
    p = find(dirs["bsdgames"], f"bsdgames/quiz/{name}")
    if not p:
        return []
    text = read_text(p[0]).replace("\\\n", "")
    return [[quiz_expand(f) for f in line.split(":")] for line in text.splitlines() if ":" in line]


def quiz_convs(dirs, rng):
    out = []
    for name in ("africa", "america", "asia", "europe"):
        for country, capital in (r[:2] for r in quiz_rows(dirs, name)):
            out.append(conv(rng.choice([f"What is the capital of {country}?", f"Which city is the capital of {country}?"]),
                            f"The capital of {country} is {capital}."))
    for r in quiz_rows(dirs, "state"):
        out.append(conv(f"What is the capital of the US state of {r[0]}?", f"The capital of {r[0]} is {r[1]}."))
    for sym, num, _, el in (r[:4] for r in quiz_rows(dirs, "elements") if len(r) >= 4):
        out.append(conv(f"What is the chemical symbol for {el.lower()}?", f"The chemical symbol for {el.lower()} is {sym}."))
        out.append(conv(f"What is the atomic number of {el.lower()}?", f"The atomic number of {el.lower()} is {num}."))
    for ind, coll in (r[:2] for r in quiz_rows(dirs, "collectives")):
        out.append(conv(f"What is a group of {ind} called?", f"A group of {ind} is called a {coll}."))
    for baby, adult in (r[:2] for r in quiz_rows(dirs, "babies")):
        out.append(conv(f"What is a baby {adult} called?", f"A baby {adult} is called a {baby}."))
    return out

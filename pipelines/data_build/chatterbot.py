"""chatterbot-corpus: its English and Chinese small-talk conversations as SFT conversations, without its own
identity lines and what does not fit a tiny model. Part of `python scripts/build_data.py`.
"""
import re

import yaml

from pipelines.data_build.packages import find, read_text
from pipelines.data_build.records import SYSTEM_EN, SYSTEM_ZH, conv

# chatterbot's own identity lines ("I am a chat bot named ChatterBot") would fight identity.jsonl
IDENTITY_RX = re.compile(r"chatterbot|your name|who are you|who made|who created|are you (a |an )?(bot|robot|human|ai)"
                         r"|你是谁|名字|你是一个|机器人|人工智能", re.I)


def chatterbot_convs(dirs, rng):
    out = []
    for lang, system in (("english", SYSTEM_EN), ("chinese", SYSTEM_ZH)):
        for p in find(dirs["chatterbot"], f"data/{lang}/*.yml"):
            data = yaml.safe_load(read_text(p)) or {}
            for c in data.get("conversations") or []:
                turns = [str(t).strip() for t in c if t is not None and str(t).strip()]
                if len(turns) % 2:
                    turns = turns[:-1]
                if len(turns) < 2 or any(IDENTITY_RX.search(t) for t in turns):
                    continue
                # long code listings and letter-by-letter games do not fit a tiny model's 512 tokens
                if any("```" in t for t in turns) or sum(len(t) == 1 and t.isascii() for t in turns) > 2:
                    continue
                out.append(conv(*turns, system=rng.choice(system) if rng.random() < 0.15 else None))
    return out

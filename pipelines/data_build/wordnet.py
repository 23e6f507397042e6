"""WordNet's nouns (wordnet-base): musicians, composers, musical instruments and music genres, as music
questions (wordnet_music) and as the knowledge base's musicians, instruments, genres and music terms (voices,
notation, forms, dances: wordnet_knowledge).
Part of `python scripts/build_data.py`.
"""
import functools
import re

from pipelines.data_build.packages import find, read_text


def article(word):
    w = word.lower()
    if w.startswith(("uni", "use", "eu", "one")):  # "a United States composer", "a euphonium"
        return "a"
    return "an" if w[:1] in "aeiou" else "a"


def wordnet_synsets(dirs):
    """WordNet's nouns: ({offset: (words, hypernym offsets, first gloss, header)}, full glosses by offset,
    ancestors(offset) -> hypernym offsets up to the root), or None without the source."""
    path = find(dirs["wordnet"], "wordnet/data.noun")
    return parse_wordnet(str(path[0])) if path else None


@functools.lru_cache(maxsize=2)
def parse_wordnet(path):
    """wordnet_synsets of one data.noun file, parsed once (the questions and the knowledge base read it)."""
    synsets, glosses = {}, {}
    for line in read_text(path).splitlines():
        if line.startswith(" ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        f = head.split()
        n_words = int(f[3], 16)
        words = [f[4 + 2 * i].replace("_", " ") for i in range(n_words)]
        k = 4 + 2 * n_words
        n_ptr = int(f[k])
        hyper = [f[k + 1 + 4 * i + 1] for i in range(n_ptr) if f[k + 1 + 4 * i] in ("@", "@i")]
        synsets[f[0]] = (words, hyper, gloss.split(";")[0].strip(), head)
        glosses[f[0]] = gloss.strip()

    def ancestors(off, depth=0):
        if depth > 20 or off not in synsets:
            return []
        out = []
        for h in synsets[off][1]:
            out += [h] + ancestors(h, depth + 1)
        return out
    return synsets, glosses, ancestors


def wordnet_music_kinds(dirs, genres=False):
    """[(offset, "person"|"instrument"|"genre")] of WordNet's musicians and composers (instances),
    musical instruments and (genres=True) music genres, by offset."""
    synsets, _, ancestors = wordnet_synsets(dirs)
    roots = {}
    for off, (words, *_rest) in synsets.items():
        if words[0] in ("musician", "composer", "musical instrument", "music genre") and off not in roots.values():
            roots.setdefault(words[0], off)
    out = []
    for off in sorted(synsets):
        head = synsets[off][3]
        anc = set(ancestors(off))
        if " @i " in head and (roots.get("musician") in anc or roots.get("composer") in anc):
            out.append((off, "person"))
        elif roots.get("musical instrument") in anc and " @i " not in head:
            out.append((off, "instrument"))
        elif genres and roots.get("music genre") in anc:
            out.append((off, "genre"))
    return out


TERM_ROOTS = ("musical composition", "dancing", "singing voice", "dance music", "chord", "musical notation")


def wordnet_music_terms(dirs, known=()):
    """Offsets of WordNet's other music nouns: those in the topic domain of music (";c" to the synset of
    "music", the art) and those under TERM_ROOTS (forms such as quartet, dances such as the samba, voices,
    chords, notation), less the offsets in known (the musicians, instruments and genres)."""
    synsets, _, ancestors = wordnet_synsets(dirs)
    music = [o for o, (w, _, g, _) in synsets.items() if w[0] == "music" and "auditory communication" in g]
    roots = {o for o, (w, *_) in synsets.items() if w[0] in TERM_ROOTS}
    known = set(known)
    return [o for o in sorted(synsets) if o not in known and
            ((music and f" ;c {music[0]} n " in synsets[o][3]) or roots & set(ancestors(o)))]


def wordnet_music(dirs):
    """(question, answer sentence, [answers]) for musicians, composers and instruments in WordNet."""
    if not find(dirs["wordnet"], "wordnet/data.noun"):
        return []
    synsets = wordnet_synsets(dirs)[0]
    out = []
    for off, kind in wordnet_music_kinds(dirs):
        words, hyper, gloss, head = synsets[off]
        if len(gloss) < 10:
            continue
        kinds = [w for h in hyper for w in synsets[h][0] if h in synsets]
        answers = [k for k in kinds if k.lower() in gloss.lower()]
        if not answers:
            continue
        if kind == "person":
            name = max(words, key=len)  # "Johann Sebastian Bach" rather than "Bach"
            g = gloss if re.match(r"(a|an|the) ", gloss) else f"{article(gloss)} {gloss}"
            out.append((f"Who was {name}?", f"{name} was {g}.", answers))
        else:
            name = words[0]
            g = gloss if re.match(r"(a|an|the|any) ", gloss) else f"{article(gloss)} {gloss}"
            out.append((f"What is {article(name)} {name}?", f"{article(name).capitalize()} {name} is {g}.", answers))
    return out


def wordnet_knowledge(dirs):
    """{file name: entries} of WordNet's musicians and composers, instruments and music genres: every name
    of the synset and its whole gloss (examples included)."""
    if not find(dirs["wordnet"], "wordnet/data.noun"):
        return {}
    synsets, glosses, _ = wordnet_synsets(dirs)
    files = {"musicians.jsonl": [], "instruments.jsonl": [], "genres.jsonl": [], "terms.jsonl": []}
    name_of = {"person": "musicians.jsonl", "instrument": "instruments.jsonl", "genre": "genres.jsonl",
               "term": "terms.jsonl"}
    kinds_of = wordnet_music_kinds(dirs, genres=True)
    for off, kind in kinds_of + [(o, "term") for o in wordnet_music_terms(dirs, [o for o, _ in kinds_of])]:
        words, hyper, _, _ = synsets[off]
        name = max(words, key=len) if kind == "person" else words[0]
        also = [w for w in words if w != name]
        kinds = sorted({w for h in hyper if h in synsets for w in synsets[h][0][:1]})
        line = f"{name}{' (also ' + ', '.join(also) + ')' if also else ''}: {glosses[off]}"
        files[name_of[kind]].append(line + (f" A kind of {', '.join(kinds)}." if kinds else ""))
    return files

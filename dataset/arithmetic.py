"""The synthetic arithmetic task of reinforcement learning (trainer/train_grpo.py): seeded problems at
several difficulties, each with its exact answer, and a held-out split that no training file can reach.

A problem's split is fixed by a hash of its text (10% held out), not by the seed, so two files made with
different seeds or sizes never share a held-out problem with a training one. Each record is a conversation
whose one user turn asks, with the fields the rewards read (rewards/): "answers" (the exact result, as
text), "operands" (the numbers in the question, which an answer may repeat) and "difficulty".

    from dataset.arithmetic import make_problems, LEVELS
    records = make_problems(1000, levels=(1, 2), split="train", seed=0)

scripts/make_arithmetic.py writes them (dataset/arithmetic.jsonl, dataset/arithmetic_test.jsonl).
"""
import hashlib
import random

# difficulty -> what a problem is (the base model's accuracy per level: docs/training.md, "GRPO")
LEVELS = {
    1: "a + b, one-digit numbers",
    2: "a + b or a - b, two-digit numbers",
    3: "a x b, a one-digit and a two-digit number",
    4: "a + b - c or a x b + c, two-digit numbers",
}
HELD_OUT = 10            # one problem in HELD_OUT is in the test split
QUESTION = "What is {expr}? Give the final answer as a number."


def expression(rng, level):
    """-> (expression text, exact integer result, operands) of one problem at a difficulty level."""
    if level == 1:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"{a} + {b}", a + b, [a, b]
    if level == 2:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if rng.random() < 0.5:
            return f"{a} + {b}", a + b, [a, b]
        a, b = max(a, b), min(a, b)
        return f"{a} - {b}", a - b, [a, b]
    if level == 3:
        a, b = rng.randint(2, 9), rng.randint(10, 99)
        return f"{a} x {b}", a * b, [a, b]
    if level == 4:
        a, b, c = rng.randint(10, 99), rng.randint(10, 99), rng.randint(10, 99)
        if rng.random() < 0.5:
            return f"{a} + {b} - {c}", a + b - c, [a, b, c]
        a = rng.randint(2, 9)
        return f"{a} x {b} + {c}", a * b + c, [a, b, c]
    raise ValueError(f"difficulty {level} is not one of {sorted(LEVELS)}")


def split_of(question):
    """"test" for the held-out share of problems, "train" for the rest: by the question's hash, stable."""
    digest = hashlib.blake2b(question.encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "big") % HELD_OUT == 0 else "train"


def make_problems(n, levels=(1,), split="train", seed=0):
    """n distinct problems of the split, levels mixed in turn, seeded -> records. Fewer than n when a level
    has fewer distinct problems in that split (level 1 holds 100 in all): as many as exist."""
    if split not in ("train", "test"):
        raise ValueError("split is train or test")
    rng, seen, out = random.Random(seed), set(), []
    tries = 0
    while len(out) < n and tries < 50 * n + 1000:
        level = levels[tries % len(levels)]
        tries += 1
        expr, result, operands = expression(rng, level)
        question = QUESTION.format(expr=expr)
        if question in seen or split_of(question) != split:
            continue
        seen.add(question)
        out.append({"conversations": [{"role": "user", "content": question}], "answers": [str(result)],
                    "operands": operands, "difficulty": level})
    return out

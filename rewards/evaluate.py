"""A model's rewards on a prompt file: greedy answers (THE decoding batch, as GRPO's validation decodes),
scored by the run's reward functions -> the mean of each and a few answers verbatim. The held-out accuracy
of the arithmetic task before and after GRPO (docs/training.md, "GRPO") is this with --reward arithmetic.

Library module; scripts/eval_rewards.py runs it:
    from rewards.evaluate import evaluate_rewards
    report = evaluate_rewards(loaded, records, RewardSet.parse(["arithmetic"]), max_new_tokens=64)
"""
import time

from inference.prompt import build_prompt
from trainer.rollout import sample_groups, scored

SHOWN = 5                  # answers kept verbatim in the report


def evaluate_rewards(loaded, records, rewards, max_new_tokens=64, batch_size=32, system_prompt=None):
    """records (prompt conversations with the rewards' fields) -> {"n", "mean" {reward: mean}, "total",
    "completion_length", "seconds", "examples" [{prompt, answer, rewards}]}."""
    tok, model = loaded.tokenizer, loaded.model
    window = model.config.max_position_embeddings
    start, texts, rows = time.perf_counter(), [], []
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        prompts = [build_prompt(tok, r["conversations"], system_prompt, window=window, max_new_tokens=max_new_tokens)
                   for r in chunk]
        groups = sample_groups(model, prompts, 1, max_new_tokens, 0.0, tok.stop_ids, tok.pad_id, [0] * len(prompts))
        t, r = scored(groups, chunk, max_new_tokens, tok)
        texts, rows = texts + t, rows + r
    total, each = rewards(texts, rows)
    n = max(len(texts), 1)
    return {"n": len(texts), "total": total.sum().item() / n, "mean": {k: v.sum().item() / n for k, v in each.items()},
            "completion_length": sum(r["_tokens"] for r in rows) / n, "seconds": round(time.perf_counter() - start, 1),
            "examples": [{"prompt": r["conversations"][-1]["content"], "answer": t,
                          "rewards": {k: v[j].item() for k, v in each.items()}}
                         for j, (r, t) in enumerate(zip(rows[:SHOWN], texts[:SHOWN]))]}

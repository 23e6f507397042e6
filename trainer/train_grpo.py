"""Reinforcement learning with verifiable rewards (GRPO, DAPO, Dr. GRPO, CISPO): the model samples G answers
to each prompt, a program scores them, and each answer is pushed up or down by how it did against its group.

    python trainer/train_grpo.py --lora_name lora_math                   # the arithmetic task, a LoRA on the base
    python trainer/train_grpo.py --lora_name lora_math --base out/smollm2_135m.pth --max_minutes 20
    python trainer/train_grpo.py --reward answer --reward format:0.2 --data_path ../dataset/music_only.jsonl
    python trainer/train_grpo.py --reward mymodule:my_reward --loss_type cispo --beta 0
    torchrun --nproc_per_node 2 trainer/train_grpo.py --lora_name lora_math

Data: one prompt a line, a conversation (its last assistant turn, if any, is left out) with the fields its
rewards read: "answers" (answer, arithmetic), "operands" (arithmetic), "identity" and "ask" (identity).
scripts/make_arithmetic.py makes the shipped dataset/arithmetic.jsonl and its held-out arithmetic_test.jsonl.
The base (default out/full_sft_{hidden}.pth, else the imported SmolLM2, or --base) gives the model config
and tokenizer. Writes out/grpo_{hidden}.pth (eval_model.py --model_mode 5 loads it), or with --lora_name the
adapter out/lora/{lora_name}_{hidden}.pth; out/logs/{run}.jsonl has each step's rewards (per function), the
share of groups with equal rewards, KL, clip ratio, completion length, rollout and update seconds; and the
validation's greedy rewards (val_loss is minus the mean reward). docs/training.md, "GRPO".
"""
from checkpoint.pth import build_model, file_sha256
from core.cli import run_cli
from core.errors import UserError
from rewards.functions import RewardSet
from trainer.lora_flags import apply_lora_flags, check_lora_flags
from trainer.grpo import PolicyLoss
from trainer.grpo_objective import GRPOObjective, Settings
from trainer.rollout import collate_prompts
from trainer.stage import artefact_writer, finish_run, load_base, load_prompt_sets, stage_meta, start_run


def build(cfg, say, world_size=1):
    """Every input read and checked, the model built -> (model, base, config, tokenizer, rewards, sets,
    data path, split info, LoRA config or None)."""
    base, ckpt, config, tokenizer = load_base(cfg, "full_sft", say)
    if cfg.max_new_tokens > config.max_position_embeddings // 2:
        raise UserError(f"--max_new_tokens {cfg.max_new_tokens}: at most half of {base.name}'s "
                        f"{config.max_position_embeddings}-token window ({config.max_position_embeddings // 2})")
    if cfg.lora_name:
        check_lora_flags(cfg, config)
    rewards = RewardSet(cfg.reward.split(","))
    train_set, val_set, data_path, info = load_prompt_sets(cfg, tokenizer, config.max_position_embeddings,
                                                           rewards.check_record, say)
    step_prompts = cfg.batch_size * cfg.accumulation_steps
    if cfg.num_iterations > 1 and len(train_set) < step_prompts * world_size:
        raise UserError(f"{data_path}: {len(train_set)} prompts, fewer than one step takes ({step_prompts} per "
                        "process); lower --batch_size or give more prompts")
    model = build_model(config, ckpt["model"], where=str(base))
    lora_cfg = apply_lora_flags(model, cfg)[0] if cfg.lora_name else None
    say(f"base {base}: " + (f"LoRA r={lora_cfg.r}; " if lora_cfg else "") +
        f"trainable {model.num_parameters(trainable_only=True):,} / {model.num_parameters():,} parameters")
    return model, base, config, tokenizer, rewards, (train_set, val_set), data_path, info, lora_cfg


def main(argv=None):
    run = start_run("grpo", argv, __doc__.splitlines()[0])
    cfg, say = run.cfg, run.say
    # read and check every input before anything is written
    model, base, config, tokenizer, rewards, (train_set, val_set), data_path, info, lora_cfg = build(cfg, say, run.dist.world_size)
    base_sha = file_sha256(base)
    settings = Settings(cfg.num_generations, cfg.max_new_tokens, cfg.temperature, cfg.scale_rewards,
                        cfg.num_iterations, cfg.dynamic_sampling, "adapter_off" if lora_cfg else "copy", cfg.seed)
    loss = PolicyLoss(cfg.loss_type, cfg.beta, cfg.epsilon, cfg.epsilon_high, cfg.max_new_tokens)
    meta = {**stage_meta("grpo", data_path, info, base, base_sha),
            "rl": {"loss_type": cfg.loss_type, "beta": cfg.beta, "rewards": rewards.names, "reward": cfg.reward,
                   "num_generations": cfg.num_generations, "max_new_tokens": cfg.max_new_tokens,
                   "temperature": cfg.temperature, "scale_rewards": cfg.scale_rewards,
                   "reference": ("adapter_off" if lora_cfg else "copy") if cfg.beta else None}}
    path, save_model = artefact_writer(cfg, "grpo", config, tokenizer, base, base_sha, lora_cfg)
    say(f"{cfg.loss_type} loss, beta {cfg.beta:g}" + (" (no reference)" if not cfg.beta else "")
        + f", {cfg.num_generations} completions per prompt of at most {cfg.max_new_tokens} tokens at temperature "
        f"{cfg.temperature:g}, rewards {cfg.reward}, learning rate {cfg.learning_rate:g}")
    run.writes(path, save_model, meta)
    run.objective = GRPOObjective(rewards, settings, loss, tokenizer)
    finish_run(run, model, train_set, val_set, collate_prompts)


if __name__ == "__main__":
    run_cli(main)

"""TinyMind model package: config, network, LoRA, tokenizer, checkpoints and generation."""

"""Models in and out of the wider ecosystem: Hugging Face transformers/PEFT folders and GGUF files."""

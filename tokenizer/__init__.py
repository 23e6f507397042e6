"""Text <-> token ids: the sentencepiece and Hugging Face backends and THE chat template."""

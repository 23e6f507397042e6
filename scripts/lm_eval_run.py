r"""lm-evaluation-harness's command line with TinyMind's model ("tinymind") registered: every flag of
`python -m lm_eval` (lm-eval 0.4.13) works as it does there.

    python scripts/lm_eval_run.py --model tinymind --model_args model=smollm2 --tasks arc_easy --limit 100
    python scripts/lm_eval_run.py --model tinymind --model_args model=lora_music,batch_tokens=8192 \
        --tasks my_task --include_path DIR --log_samples --output_path out/lm_eval

model_args of tinymind: see evaluation/lm_eval_model.py (model_args win over --device and --batch_size).
"""
import importlib


from lm_eval.__main__ import cli_evaluate

from core.cli import run_cli

if __name__ == "__main__":
    importlib.import_module("evaluation.lm_eval_model")       # registers "tinymind"
    run_cli(cli_evaluate)                                      # a bad model= is one line, exit 2

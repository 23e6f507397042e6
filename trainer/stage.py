"""What the three stage entry points share: start-up (the run context, trainer/context.py), loading the
checkpoint a stage starts from, the chat datasets, the checkpoint record and the hand-over to the loop.
Library module; trainer/train_*.py call it:
    run = start_run("full_sft", argv, description)
    ...                                                # read and check every input, build the model
    run.writes(path, save_model, stage_meta("full_sft", data_path, info, base))
    finish_run(run, model, train_set, val_set, collate)
"""
import json
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from dataset.lm_dataset import ChatDataset, collate_chat, load_split
from dataset.preference import PreferenceDataset, collate_pairs, normalize_pair
from checkpoint import layout
from core.atomic import check_writable, clean_stale_temps, keep_aside
from core.malloc import return_freed_memory
from core.threads import set_threads
from core.ownership import check_outputs, owning
from checkpoint.adapter import save_adapter
from checkpoint.pth import config_from_dict, file_sha256, load_checkpoint, save_checkpoint
from core.errors import UserError
from tokenizer.tokenizer import load_tokenizer_from_state
from trainer.args import find_base, format_config, parse_args, resolve_inputs
from trainer.context import Run
from trainer.distributed import cleanup_distributed, collective_timeout, seed_everything, setup_distributed
from trainer.loop import train
from trainer.rollout import PromptSet, prompt_record


def start_run(stage, argv, description):
    """Parse the flags, join the torchrun group (if any), print the resolved config, seed.
    -> the run context Run(cfg, dist, say), where say prints on rank 0 only; the stage entry point adds
    what the run writes (run.writes) before finish_run."""
    cfg = parse_args(stage, argv, description)
    return_freed_memory()                                          # activations freed are given back
    check_writable(Path(cfg.out_dir) / "logs" / "run.jsonl")      # before any work: out/ can be written
    for folder in (Path(cfg.out_dir), Path(cfg.out_dir) / "lora"):   # what killed runs left (core/atomic.py)
        clean_stale_temps(folder)
    dist = setup_distributed(cfg.device, cfg.ddp_timeout)
    say = print if dist.is_main else (lambda *a, **k: None)
    say("train config (what differs from the defaults; all of it is in the run's log):\n"
        + format_config(cfg, stage))
    say(set_threads(cfg.threads))
    seed_everything(cfg.seed)
    return Run(cfg, dist, say)


def load_base(cfg, parent, say=print, chosen=None):
    """The checkpoint a fine-tuning stage starts from (chosen = (path, why) when the stage picked it, else
    --base, else out/{parent}_{hidden}.pth): its path, the checkpoint dict, and the model config and
    tokenizer it carries (never taken from flags). Says which file and why it was picked."""
    base, why = chosen or find_base(cfg, parent)
    say(f"base: {base} ({why})")
    ckpt = load_checkpoint(base)
    config = config_from_dict(ckpt["config"], base)
    check_model_flags(cfg, config, base)
    return base, ckpt, config, load_tokenizer_from_state(ckpt["tokenizer"], base)


def check_model_flags(cfg, config, where):
    """MiniMind's users pass --hidden_size/--num_hidden_layers/--use_moe to every stage: they pick the
    base file; one the base does not match is one line saying what the base has. --max_seq_len must fit
    the model's window."""
    given = {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers}
    for name, value in given.items():
        if value and value != getattr(config, name):
            raise UserError(f"--{name} {value}, but {where} has {name} {getattr(config, name)} (hidden "
                            f"{config.hidden_size} x {config.num_hidden_layers} layers); drop the flag or pass "
                            "the base with that shape with --base")
    if cfg.use_moe and not config.use_moe:
        raise UserError(f"--use_moe, but {where} is not a mixture-of-experts model; drop --use_moe")
    check_window(cfg, config, where)


def check_window(cfg, config, where):
    if cfg.max_seq_len > config.max_position_embeddings:
        raise UserError(f"--max_seq_len {cfg.max_seq_len} is above the window of {where} "
                        f"({config.max_position_embeddings} positions); use at most that")


def load_chat_sets(cfg, tokenizer, say):
    """Conversation JSONL -> (train ChatDataset, val ChatDataset or None, data path, split info)."""
    data_path, val_path = resolve_inputs(cfg)
    train_recs, val_recs, info = load_split(data_path, val_path, cfg.val_ratio, cfg.seed, "chat", cfg.skip_bad)
    make = partial(ChatDataset, tokenizer=tokenizer, max_seq_len=cfg.max_seq_len, loss_on=cfg.loss_on,
                   system_prompt=cfg.system_prompt)
    train_set = make([r["conversations"] for r in train_recs], where=str(data_path))     # refuses a set that
    val_set = make([r["conversations"] for r in val_recs], where=f"{val_path or data_path} (validation)") \
        if val_recs else None                                                             # keeps too few targets
    say(f"{data_path}: {len(train_set):,} conversations, {train_set.n_truncated} truncated to "
        f"{cfg.max_seq_len} tokens, {train_set.n_no_target} without a target token"
        + (f", {info['n_bad']} bad lines skipped" if info["n_bad"] else ""))
    info["identity"] = data_identity(train_recs, data_path)
    if info["identity"]:
        say(f"identity taught: {info['identity']['name']}, made by {info['identity']['creator']} "
            "(recorded in the output; eval_model.py --identity_test checks it)")
    info["knowledge"] = data_knowledge(train_recs, data_path)
    if info["knowledge"]:
        say(f"knowledge base: {info['knowledge']} (its passages are in the prompts; recorded in the output, so "
            "eval_model.py, the web demo and the server retrieve from it by default)")
    return train_set, val_set, data_path, info


def load_pair_sets(cfg, tokenizer, say):
    """Preference JSONL (dataset/preference.py) -> (train PreferenceDataset, val one or None, data path,
    split info); a question's pairs stay on one side of the split."""
    data_path, val_path = resolve_inputs(cfg)
    train_recs, val_recs, info = load_split(data_path, val_path, cfg.val_ratio, cfg.seed, "any", cfg.skip_bad,
                                            normalize=normalize_pair)
    make = partial(PreferenceDataset, tokenizer=tokenizer, max_seq_len=cfg.max_seq_len, system_prompt=cfg.system_prompt)
    train_set = make(train_recs, where=str(data_path))
    val_set = make(val_recs, where=f"{val_path or data_path} (validation)") if val_recs else None
    say(f"{data_path}: {len(train_set):,} pairs, {train_set.n_truncated} cut to {cfg.max_seq_len} tokens, "
        f"{train_set.n_dropped} dropped (no answer token left)"
        + (f", {len(val_set):,} for validation" if val_set else "")
        + (f", {info['n_bad']} bad lines skipped" if info["n_bad"] else ""))
    return train_set, val_set, data_path, info


def load_prompt_sets(cfg, tokenizer, window, check, say):
    """Prompt JSONL (a conversation, and the fields the rewards read; a last assistant turn, the reference
    answer of SFT data, is left out of the prompt) -> (train PromptSet, val PromptSet or None, data path,
    split info). check(record, where) refuses a record a reward cannot score (one line file:line)."""
    def normalize(obj, where):
        record = prompt_record(obj, where)
        check(record, where)
        return record
    data_path, val_path = resolve_inputs(cfg)
    train_recs, val_recs, info = load_split(data_path, val_path, cfg.val_ratio, cfg.seed, "prompt", cfg.skip_bad,
                                            normalize=normalize)
    make = partial(PromptSet, tokenizer=tokenizer, window=min(window, cfg.max_seq_len + cfg.max_new_tokens),
                   max_new_tokens=cfg.max_new_tokens, system_prompt=cfg.system_prompt)
    train_set, val_set = make(train_recs), (make(val_recs) if val_recs else None)
    say(f"{data_path}: {len(train_set):,} prompts" + (f", {len(val_set):,} for validation" if val_set else "")
        + (f", {info['n_bad']} bad lines skipped" if info["n_bad"] else ""))
    return train_set, val_set, data_path, info


def data_knowledge(records, path):
    """The one "knowledge" (the folder, relative to the repository root, that a record's passages were
    retrieved from: pipelines/data_build/raft.py) the records carry, or None. Two different ones are one line."""
    found = {r["knowledge"] for r in records if r.get("knowledge")}
    if len(found) > 1:
        raise UserError(f"{path}: the records name {len(found)} knowledge bases ({', '.join(sorted(map(str, found)))}); "
                        "passages from one knowledge base per training set")
    value = found.pop() if found else None
    if value is not None and not isinstance(value, str):
        raise UserError(f"{path}: a \"knowledge\" field is a folder path relative to the repository root, as "
                        "\"dataset/knowledge/music\"")
    return value


def data_identity(records, path):
    """The one "identity" ({"name", "creator"[, "creator_zh"]}) the records carry (scripts/make_identity.py
    puts it on each of its lines, and mixes keep it), or None. Two different ones are one line."""
    found = {json.dumps(r["identity"], sort_keys=True, ensure_ascii=False) for r in records
             if isinstance(r.get("identity"), dict)}
    if len(found) > 1:
        names = ", ".join(sorted(json.loads(f).get("name", "?") for f in found))
        raise UserError(f"{path}: the data teaches {len(found)} identities ({names}); mix one identity set only")
    identity = json.loads(found.pop()) if found else None
    if identity is not None and not all(isinstance(identity.get(k), str) and identity[k].strip()
                                        for k in ("name", "creator")):
        raise UserError(f"{path}: an \"identity\" field needs non-empty \"name\" and \"creator\" strings")
    return identity


def chat_collate(cfg, tokenizer, pairs=False):
    """Dynamic padding to the longest sample of each batch (--padding max_length pads to max_seq_len);
    pairs: preference pairs, the chosen rows then the rejected ones."""
    return partial(collate_pairs if pairs else collate_chat, pad_id=tokenizer.pad_id,
                   pad_to=cfg.max_seq_len if cfg.padding == "max_length" else None)


def artefact_writer(cfg, stage, config, tokenizer, base, base_sha, lora_cfg=None):
    """-> (the run's artefact path, save_model(model, meta) -> path): with lora_cfg the adapter
    out/lora/{lora_name}_{hidden}.pth (on the base it records), else the full checkpoint out/{stage}_{hidden}.pth
    in float32."""
    if lora_cfg is not None:
        path = layout.adapter_path(cfg.out_dir, cfg.lora_name, config.hidden_size, config.use_moe)

        def save_model(m, meta):
            save_adapter(path, m, lora_cfg, base, base_sha, config, tokenizer.sha256, meta)
            return path
    else:
        path = layout.checkpoint_path(cfg.out_dir, stage, config.hidden_size, config.use_moe)

        def save_model(m, meta):
            save_checkpoint(path, {k: v.float() for k, v in m.state_dict().items()}, config, tokenizer, meta)
            return path
    return path, save_model


def stage_meta(stage, data_path, info, base=None, base_sha=None):
    """The record every checkpoint of a stage carries (the loop adds step, tokens, losses, config)."""
    if base is not None and base_sha is None:
        base_sha = file_sha256(base)
    meta = {"stage": stage, "parent": str(base) if base is not None else None, "parent_sha256": base_sha,
            "val_path": info["val_path"], "val_lines": info["val_lines"], "data_path": str(data_path)}
    for key in ("identity", "knowledge"):
        if info.get(key):
            meta[key] = info[key]
    return meta


def finish_run(run, model, train_set, val_set, collate):
    """Train (trainer/loop.py) with logs and states named after the artefact run.path, leave the process
    group, and say where the result is. Before the first step: no output is an input (core/ownership.py),
    and the run owns its artefact (a second run of the same name is refused, naming this one's pid)."""
    cfg, path = run.cfg, run.path
    log = layout.log_path(cfg.out_dir, run.name)
    hint = "pass another --out_dir" + (" or --lora_name" if run.meta.get("stage") in ("lora", "dpo", "grpo") else "")
    check_outputs([("the run's output", path), ("its log", log), ("its loss curve", layout.plot_path_for(log)),
                   ("its state", layout.state_path(cfg.out_dir, run.name, 1))],
                  [("--base", run.meta.get("parent")), ("--data_path", run.meta.get("data_path")),
                   ("--from_lora", run.meta.get("from_lora")), ("--teacher", (run.meta.get("distill") or {}).get("teacher")),
                   ("--val_data", run.meta.get("val_path")), ("--tokenizer", cfg.tokenizer or None)], hint=hint)
    keeper = Keeper(run, [path, log, layout.plot_path_for(log)])
    with owning(path, f"training {run.name} into", hint=hint, enabled=run.dist.is_main), \
            collective_timeout(run.dist, cfg.ddp_timeout):
        final = train(replace(run, save_model=keeper.wrap(run.save_model)), model, train_set, collate,
                      val_set=val_set)
    cleanup_distributed()
    run.say(f"saved {final}")
    return final


class Keeper:
    """No finished output is lost: when a new run (not --resume) is about to write its first save over the
    outputs of an earlier run (its checkpoint or adapter, log and loss curve), those move to
    out/previous/{run}-{time}/ first, and the run says so. A run that fails before its first save leaves
    them where they were."""

    def __init__(self, run, files):
        self.files, self.say, self.pending = files, run.say, not run.cfg.resume and Path(files[0]).is_file()
        self.folder = layout.previous_dir(run.cfg.out_dir, run.name, time.strftime(
            "%Y%m%d-%H%M%S", time.localtime(Path(files[0]).stat().st_mtime))) if self.pending else None

    def wrap(self, save_model):
        def save(model, meta):
            if self.pending:
                moved = keep_aside(self.files, self.folder)
                self.say(f"kept the previous {', '.join(p.name for p in moved)} in {self.folder}")
                self.pending = False
            return save_model(model, meta)
        return save

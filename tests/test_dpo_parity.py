"""DPO parity with TRL 1.16 (a test dependency only): on the same model (a random tiny TinyMind exported to
transformers), the same batch and the same reference log-probabilities, TinyMind's sigmoid, conservative,
IPO, RPO and SimPO losses, their gradients on every weight and the logged rewards equal TRL's, and the
per-answer log-probabilities equal a transformers computation."""
import copy
import random
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from checkpoint.pth import save_checkpoint
from dataset.preference import PreferenceDataset, collate_pairs
from factories import default_tokenizer, make_model, words
from interop.hf import export_hf
from trainer.distributed import Dist
from trainer.preference import PreferenceLoss, PreferenceObjective, Reference, answer_logps

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(TinyMind model, exported HF model and tokenizer, a collated batch of 3 pairs, the reference logps)."""
    tmp = tmp_path_factory.mktemp("dpo_parity")
    tok = default_tokenizer()
    model = make_model(vocab_size=tok.vocab_size, std=0.08).train()
    save_checkpoint(tmp / "m.pth", model.state_dict(), model.config, tok, {"stage": "full_sft", "step": 0})
    hf_dir = export_hf(tmp / "m.pth", tmp / "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).train()
    rng = random.Random(3)
    pairs = [{"prompt": [{"role": "user", "content": words(rng, 2, 8)}], "chosen": words(rng, 2, 12),
              "rejected": words(rng, 5, 20)} for _ in range(3)]
    ds = PreferenceDataset(pairs, tok, max_seq_len=64)
    batch = collate_pairs([ds[i] for i in range(len(ds))], pad_id=tok.pad_id)
    with torch.no_grad():
        logps = answer_logps(model, batch["input_ids"], batch["labels"])[0]
    ref = (logps + torch.tensor([0.7, -1.3, 0.2, 1.1, -0.4, 0.9])).view(2, -1).T    # (pairs, [chosen, rejected])
    return SimpleNamespace(model=model, hf_model=hf_model, hf_tok=transformers.AutoTokenizer.from_pretrained(hf_dir),
                           batch=batch, ref=ref, tmp=tmp)


def tinymind_step(s, loss, rpo_alpha=0.0, pairs=None):
    """TinyMind's loss, gradients and logged metrics on the batch (its first `pairs` pairs)."""
    batch = s.batch if pairs is None else sub_batch(s.batch, pairs)
    model = copy.deepcopy(s.model)
    objective = PreferenceObjective(loss, "copy", rpo_alpha=rpo_alpha)
    objective.reference = Reference(model, "adapter_off", dtype=torch.float32, precompute=True)
    objective.reference.table = {"train": s.ref[:len(batch["index"])]}
    stats, n, metrics = objective.accumulate(model, [batch], Dist(), torch.amp.GradScaler("cpu", enabled=False),
                                             torch.autocast("cpu", enabled=False))
    return stats[0].item() / n, {k: p.grad for k, p in model.named_parameters()}, {k: v / n for k, v in metrics.items()}


def sub_batch(batch, pairs):
    n = len(batch["index"])
    rows = list(range(pairs)) + list(range(n, n + pairs))
    return {k: (v[rows] if k != "index" else v[:pairs]) for k, v in batch.items()}


def trl_step(s, loss_type, beta, label_smoothing=0.0, loss_weights=None, pairs=None):
    """TRL's DPOTrainer._compute_loss on the exported model: loss, gradients by TinyMind's names, metrics."""
    from datasets import Dataset
    batch = s.batch if pairs is None else sub_batch(s.batch, pairs)
    hf = copy.deepcopy(s.hf_model)
    args = trl.DPOConfig(output_dir=str(s.tmp / "trl"), loss_type=loss_type, loss_weights=loss_weights, beta=beta,
                         label_smoothing=label_smoothing, precompute_ref_log_probs=True, report_to=[], use_cpu=True,
                         bf16=False, fp16=False)
    trainer = trl.DPOTrainer(model=hf, ref_model=copy.deepcopy(hf), args=args, processing_class=s.hf_tok,
                             train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}]))
    trainer.model.train()
    n = len(batch["index"])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "completion_mask": (batch["labels"] != -100).long(),
              "ref_chosen_logps": s.ref[:n, 0], "ref_rejected_logps": s.ref[:n, 1]}
    loss = trainer._compute_loss(trainer.model, inputs, False)
    loss.backward()
    grads = {k: p.grad for k, p in trainer.model.named_parameters()}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.item(), grads, metrics


def assert_same_grads(ours, theirs):
    """Every weight's gradient, to 5e-5 of that gradient's largest entry (float32 sums over 6,400 vocabulary
    rows in another order differ in the last bits: with beta 0.5, 7 of the tied embedding's 409,600 entries
    came out 3.6e-5 apart, against transformers 5.25)."""
    for name, g in ours.items():
        assert name in theirs, name
        scale = max(1.0, theirs[name].abs().max().item())
        torch.testing.assert_close(g, theirs[name], rtol=1e-5, atol=5e-5 * scale, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("case", [
    dict(name="sigmoid", loss=PreferenceLoss("sigmoid", 0.1), trl=dict(loss_type=["sigmoid"], beta=0.1)),
    dict(name="sigmoid_beta", loss=PreferenceLoss("sigmoid", 0.5), trl=dict(loss_type=["sigmoid"], beta=0.5)),
    dict(name="ipo", loss=PreferenceLoss("ipo", 0.1), trl=dict(loss_type=["ipo"], beta=0.1)),
    # TRL 1.16's sigmoid has no label smoothing; its "aot" loss is conservative DPO once sorting a batch of
    # one pair changes nothing
    dict(name="conservative", loss=PreferenceLoss("sigmoid", 0.1, label_smoothing=0.2),
         trl=dict(loss_type=["aot"], beta=0.1, label_smoothing=0.2), pairs=1),
    dict(name="rpo", loss=PreferenceLoss("sigmoid", 0.1), rpo_alpha=0.5,
         trl=dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5], beta=0.1)),
], ids=lambda c: c["name"])
def test_losses_and_gradients_equal_trl(setup, case):
    loss, grads, metrics = tinymind_step(setup, case["loss"], case.get("rpo_alpha", 0.0), case.get("pairs"))
    trl_loss, trl_grads, trl_metrics = trl_step(setup, **case["trl"], pairs=case.get("pairs"))
    assert loss == pytest.approx(trl_loss, rel=1e-5, abs=1e-6)
    assert_same_grads(grads, trl_grads)
    # the summed log-probabilities are ~-100 in float32, whose last bit there is ~1e-5: to 1e-6 of that scale
    scale = max(abs(trl_metrics["logps/chosen"]), abs(trl_metrics["logps/rejected"]))
    for ours, theirs in [("reward_chosen", "rewards/chosen"), ("reward_rejected", "rewards/rejected"),
                         ("margin", "rewards/margins"), ("accuracy", "rewards/accuracies"),
                         ("logps_chosen", "logps/chosen"), ("logps_rejected", "logps/rejected")]:
        assert metrics[ours] == pytest.approx(trl_metrics[theirs], rel=1e-5, abs=1e-6 * scale), ours


def hf_answer_logps(hf_model, batch):
    """Per-row summed log-probabilities of the label tokens, computed from transformers' logits."""
    logits = hf_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    labels = batch["labels"][:, 1:]
    token = torch.gather(F.log_softmax(logits[:, :-1], -1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    mask = labels != -100
    return (token * mask).sum(1), mask.sum(1)


def test_answer_logps_equal_transformers(setup):
    ours, n = answer_logps(setup.model, setup.batch["input_ids"], setup.batch["labels"])[:2]
    theirs, m = hf_answer_logps(setup.hf_model, setup.batch)
    torch.testing.assert_close(ours, theirs, **TOL)
    assert n.tolist() == m.tolist()
    # the prompt never counts: every row's label tokens are its answer and the answer's end token only
    tok = default_tokenizer()
    ids, labels = setup.batch["input_ids"][0], setup.batch["labels"][0]
    assert tok.decode([int(t) for t, lab in zip(ids, labels) if lab != -100]).strip().startswith(
        tok.decode([int(t) for t in ids[labels != -100][:1]]).strip())


@pytest.mark.parametrize("gamma, smoothing", [(0.5, 0.0), (1.0, 0.1)])
def test_simpo_equals_trl_cpo(setup, gamma, smoothing):
    """SimPO (TRL: trl.experimental.cpo, loss_type="simpo", length-averaged log-probabilities, cpo_alpha 0):
    loss and gradients through the transformers model against TinyMind's."""
    from trl.experimental.cpo import CPOTrainer
    loss = PreferenceLoss("simpo", 2.0, label_smoothing=smoothing, simpo_gamma=gamma)
    ours, grads, metrics = tinymind_step(setup, loss)
    hf = copy.deepcopy(setup.hf_model)
    logps, n = hf_answer_logps(hf, setup.batch)
    avg_c, avg_r = (logps / n).chunk(2)
    cpo = SimpleNamespace(alpha=0.0, beta=2.0, simpo_gamma=gamma, label_smoothing=smoothing, loss_type="simpo",
                          accelerator=SimpleNamespace(device=torch.device("cpu")))
    losses, rew_c, rew_r = CPOTrainer.cpo_loss(cpo, avg_c, avg_r)
    losses.mean().backward()
    assert ours == pytest.approx(losses.mean().item(), rel=1e-5, abs=1e-6)
    assert_same_grads(grads, {k: p.grad for k, p in hf.named_parameters()})
    assert metrics["reward_chosen"] == pytest.approx(rew_c.mean().item(), rel=1e-5, abs=1e-5)
    assert metrics["accuracy"] == pytest.approx((rew_c > rew_r).float().mean().item())

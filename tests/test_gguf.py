"""GGUF export (interop/gguf_export.py, scripts/convert_model.py --to_gguf): the round trip back through
--from_gguf for f32, f16 and q8_0 (the same tokenizer exactly, the logits within each type's error), the
tensors laid out as llama.cpp's own converter lays them (its permute of q/k, verbatim), an adapter merged
on export, one-line refusals, and, where llama-cpp-python is installed, llama.cpp's greedy tokens equal to
TinyMind's on the same prompt.

    pytest tests/test_gguf.py
"""
import numpy as np
import pytest
import torch

from factories import (REPO, default_tokenizer, make_adapter, make_checkpoint, make_model, run_argv, run_python,
                       train_memorizer)
from checkpoint.pth import save_checkpoint
from scripts import convert_model
from test_convert import bpe_json, ids_batch, ours, write_gguf  # noqa: F401,F811 (bpe_json: a fixture)
from interop.gguf_export import export_gguf
from inference.generate import generate
from inference.load import load_for_inference

SCRIPT = "scripts/convert_model.py"
TEXT = "Hello, world! 你好，世界。 <|im_end|> tabs\tand  two spaces,\nlines, a literal \u2581 and é"
PROMPT = [5, 100, 200, 300, 400, 500, 600, 700]


def logits(loaded, ids):
    with torch.no_grad():
        return loaded.model(torch.tensor([ids])).logits[0].float()


def llama_cpp_permute(weights, n_head):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute, verbatim (n_head already the kv heads for k)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0"])
def test_round_trip_through_from_gguf(tmp_path, kind):
    ck = make_checkpoint(tmp_path / "full_sft_64.pth", std=0.2)
    gg, back = tmp_path / f"m_{kind}.gguf", tmp_path / "back.pth"
    run_python([SCRIPT, "--to_gguf", str(gg), "--ckpt", str(ck), "--type", kind], REPO)
    run_python([SCRIPT, "--from_gguf", str(gg), "--out", str(back)], REPO)
    a, b = load_for_inference(ckpt=ck), load_for_inference(ckpt=back)
    assert b.tokenizer.to_state() == a.tokenizer.to_state()              # the very tokenizer, template included
    ids = a.tokenizer.encode(TEXT)
    assert b.tokenizer.encode(TEXT) == ids and b.tokenizer.decode(ids) == TEXT
    la, lb = logits(a, ids), logits(b, ids)
    cos = torch.nn.functional.cosine_similarity(la.flatten(), lb.flatten(), dim=0).item()
    err = (la - lb).abs().max().item() / la.abs().max().item()
    limits = {"f32": (1e-6, 1 - 1e-9), "f16": (5e-3, 0.99999), "q8_0": (0.1, 0.999)}[kind]
    assert err <= limits[0] and cos >= limits[1], (kind, err, cos)


def test_tensors_are_laid_out_as_llama_cpp_writes_them(tmp_path):
    import gguf
    ck = make_checkpoint(tmp_path / "full_sft_64.pth", std=0.2)
    ref = load_for_inference(ckpt=ck).model.state_dict()
    cfg = load_for_inference(ckpt=ck).model.config
    for kind, matrix in (("f32", "F32"), ("f16", "F16"), ("q8_0", "Q8_0")):
        reader = gguf.GGUFReader(str(export_gguf(ck, tmp_path / f"{kind}.gguf", kind)))
        t = {x.name: x for x in reader.tensors}
        assert "output.weight" not in t                                  # tied: llama.cpp reuses token_embd
        assert t["blk.0.attn_q.weight"].tensor_type.name == matrix and t["output_norm.weight"].tensor_type.name == "F32"
        fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
        assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == cfg.num_hidden_layers
        assert fields["llama.attention.head_count_kv"] == cfg.num_key_value_heads
        assert fields["tokenizer.ggml.model"] == "llama" and "<|im_start|>" in fields["tokenizer.chat_template"]
        if kind == "f32":
            for name, heads in (("q_proj", cfg.num_attention_heads), ("k_proj", cfg.num_key_value_heads)):
                w = ref[f"model.layers.1.self_attn.{name}.weight"].numpy()
                got = np.asarray(t[f"blk.1.attn_{name[0]}.weight"].data).reshape(w.shape)
                assert np.array_equal(got, llama_cpp_permute(w, heads)), name
            w = ref["model.layers.0.mlp.down_proj.weight"].numpy()
            assert np.array_equal(np.asarray(t["blk.0.ffn_down.weight"].data).reshape(w.shape), w)


def gguf_fields(path):
    import gguf
    return {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items() if not k.startswith("GGUF.")}


def test_the_fields_llama_cpp_reads(tmp_path):
    tok = default_tokenizer()
    f = gguf_fields(export_gguf(make_checkpoint(tmp_path / "full_sft_64.pth"), tmp_path / "m.gguf", "f16"))
    types, tokens = f["tokenizer.ggml.token_type"], f["tokenizer.ggml.tokens"]
    im_start, im_end = tok.encode_special("<|im_start|>")[0], tok.encode_special("<|im_end|>")[0]
    assert tokens[im_start] == "<|im_start|>" and types[im_start] == types[im_end] == 3      # control tokens
    assert types[tok.sp.piece_to_id("<0x0A>")] == 6 and types[tok.sp.unk_id()] == 2 and types[1000] == 1
    assert f["tokenizer.ggml.eot_token_id"] == im_end and f["tokenizer.ggml.eos_token_id"] == tok.eos_id
    assert f["tokenizer.ggml.add_space_prefix"] is False and f["tokenizer.ggml.add_bos_token"] is False
    assert "tokenizer.ggml.bos_token_id" not in f and f["tokenizer.ggml.scores"][1000] == tok.sp.get_score(1000)


def test_a_llama_style_sentencepiece_keeps_its_space_prefix(tmp_path):
    """An imported Llama-2-style tokenizer.model (a dummy prefix before the text, a bos token it prepends):
    llama.cpp is told both, and the round trip keeps them."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizer.hf import SentencePieceHFTokenizer
    proto = pb.ModelProto()
    proto.ParseFromString(default_tokenizer().model_bytes)
    proto.normalizer_spec.add_dummy_prefix = True
    tok = SentencePieceHFTokenizer(proto.SerializeToString(), "<|endoftext|>", "<|pad|>", "<|im_start|>", True)
    assert tok.sp.id_to_piece(tok.encode("Hello")[0]) == "\u2581H"                 # the dummy prefix
    model = make_model()
    save_checkpoint(tmp_path / "llama2_64.pth", model.state_dict(), model.config, tok, {"stage": "imported"})
    gg = export_gguf(tmp_path / "llama2_64.pth", tmp_path / "m.gguf", "f32")
    f = gguf_fields(gg)
    assert f["tokenizer.ggml.add_space_prefix"] is True and f["tokenizer.ggml.add_bos_token"] is True
    assert f["tokenizer.ggml.bos_token_id"] == tok.bos_id
    back = load_for_inference(gguf_path=gg).tokenizer
    assert back.to_state() == tok.to_state() and back.encode(TEXT) == tok.encode(TEXT)


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    from interop import gguf_export as module
    calls = []

    def failing(name, *a):
        calls.append(name)
        if len(calls) == 5:
            raise OSError("disk full")
        return real(name, *a)
    real = module.tensor_data
    monkeypatch.setattr(module, "tensor_data", failing)
    with pytest.raises(OSError):
        export_gguf(make_checkpoint(tmp_path / "full_sft_64.pth"), tmp_path / "m.gguf", "f16")
    assert len(calls) == 5 and sorted(p.name for p in tmp_path.iterdir()) == ["full_sft_64.pth"]


def test_an_adapter_is_merged_on_export(tmp_path):
    base = make_checkpoint(tmp_path / "full_sft_64.pth", std=0.2)
    adapter = tmp_path / "lora" / "lora_x_64.pth"
    make_adapter(adapter, base)
    gg = export_gguf(adapter, tmp_path / "merged.gguf", "f32")
    ids = default_tokenizer().encode(TEXT)
    with_adapter, exported = load_for_inference(ckpt=adapter), load_for_inference(gguf_path=gg)
    assert (logits(with_adapter, ids) - logits(load_for_inference(ckpt=base), ids)).abs().max() > 1e-3
    assert torch.allclose(logits(exported, ids), logits(with_adapter, ids), atol=1e-5)


def test_what_cannot_be_exported_is_one_line(tmp_path):
    moe = make_checkpoint(tmp_path / "full_sft_64_moe.pth", use_moe=True)
    for args, msg in (([str(moe)], "error: GGUF export of mixture-of-experts models is not supported"),
                      ([str(tmp_path / "nope.pth")], f"error: --ckpt {tmp_path / 'nope.pth'}: file not found")):
        res = run_python([SCRIPT, "--to_gguf", str(tmp_path / "m.gguf"), "--ckpt", *args], REPO, check=False)
        assert res.returncode == 2 and res.stderr.strip().splitlines() == [msg], res.stderr
    assert not list(tmp_path.glob("*.gguf*"))                            # nothing half-written


def convert(argv, capsys, monkeypatch):
    """scripts/convert_model.py argv in this process -> (exit status, stdout, stderr)."""
    return run_argv(convert_model.main, argv, capsys, monkeypatch)


def tensor_types(path):
    import gguf
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


def test_q8_0_says_what_fell_back_to_f16_and_refuses_all(tmp_path, capsys, monkeypatch):
    """q8_0 needs rows of a multiple of 32 values: width 48 with an MLP of 64 leaves only ffn_down (rows of
    64) q8_0, said in the saved line; widths 48 and 80 leave none: refused unless --allow_fallback."""
    some = make_checkpoint(tmp_path / "some_48.pth", hidden=48, intermediate_size=64)
    none = make_checkpoint(tmp_path / "none_48.pth", hidden=48, intermediate_size=80)
    gg = tmp_path / "m.gguf"
    code, out, err = convert(["--to_gguf", gg, "--ckpt", some, "--type", "q8_0"], capsys, monkeypatch)
    assert code == 0 and ("; 13 of 15 matrices written F16: rows of 48 values are no whole number of q8_0's "
                          "32-value blocks;") in out, out + err
    types = tensor_types(gg)
    assert {types[f"blk.{i}.ffn_down.weight"] for i in (0, 1)} == {"Q8_0"}
    assert sum(t == "F16" for t in types.values()) == 13 and types["output_norm.weight"] == "F32"
    gg.unlink()
    code, out, err = convert(["--to_gguf", gg, "--ckpt", none, "--type", "q8_0"], capsys, monkeypatch)
    assert code == 2 and err.splitlines() == [
        f"error: --type q8_0: every matrix of {none} would be written F16 (rows of 48, 80 values are no whole number "
        "of q8_0's 32-value blocks); use --type f16, or pass --allow_fallback to write them so"], err
    assert not list(tmp_path.glob("m.gguf*"))
    code, out, err = convert(["--to_gguf", gg, "--ckpt", none, "--type", "q8_0", "--allow_fallback"], capsys,
                             monkeypatch)
    assert code == 0 and "; 15 of 15 matrices written F16: rows of 48, 80 values" in out, out + err
    assert "Q8_0" not in tensor_types(gg).values()
    code, out, err = convert(["--to_gguf", gg, "--ckpt", some, "--allow_fallback"], capsys, monkeypatch)
    assert code == 2 and err == "error: --allow_fallback goes with --type q8_0 (not --type f16)\n"
    code, out, err = convert(["--from_gguf", gg, "--allow_fallback"], capsys, monkeypatch)
    assert code == 2 and err == "error: --allow_fallback goes only with --to_gguf FILE --type q8_0\n"
    code, out, err = convert(["--to_gguf", tmp_path / "full.gguf", "--ckpt", make_checkpoint(
        tmp_path / "full_sft_64.pth"), "--type", "q8_0"], capsys, monkeypatch)
    assert code == 0 and "written F16" not in out and set(tensor_types(tmp_path / "full.gguf").values()) == {
        "Q8_0", "F32"}


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_llama_cpp_gives_tinymind_greedy_tokens(tmp_path, kind):
    llama_cpp = pytest.importorskip("llama_cpp")             # PyPI ships it as source only: a long build
    model, continuation = train_memorizer(PROMPT)
    ck = tmp_path / "full_sft_64.pth"
    save_checkpoint(ck, model.state_dict(), model.config, default_tokenizer(), {"stage": "full_sft"})
    ours = generate(model, [PROMPT], max_new_tokens=24)[0]
    assert ours == continuation[:24]
    llm = llama_cpp.Llama(model_path=str(export_gguf(ck, tmp_path / f"m_{kind}.gguf", kind)), n_ctx=128,
                          n_threads=2, verbose=False)
    theirs = []
    for tok in llm.generate(PROMPT, top_k=1, temp=0.0, repeat_penalty=1.0):
        theirs.append(tok)
        if len(theirs) == 24:
            break
    assert theirs == ours
    for text in ("Hello world, 你好世界. Music: piano and guitar.", "two  spaces,\ttab\nand a new line, é ü"):
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == default_tokenizer().encode(text), text



def test_export_gguf_of_an_imported_bpe_model_round_trips(tmp_path, bpe_json):
    """An imported GGUF (byte-level BPE, as SmolLM2's) written back by --to_gguf: llama.cpp's gpt2 fields
    as they came in, and the same weights, tokenizer and logits when imported again."""
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
    write_gguf(tmp_path / "m.gguf", TinyMindForCausalLM(cfg).state_dict(), bpe_json)
    state, config, tok = import_gguf(tmp_path / "m.gguf")
    save_checkpoint(tmp_path / "imported.pth", state, config, tok, {"stage": "imported"})
    out = export_gguf(tmp_path / "imported.pth", tmp_path / "again.gguf", "f32")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(str(out)).fields.items() if not k.startswith("GGUF.")}
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.merges"] == tok.gguf["merges"]
    state2, config2, tok2 = import_gguf(out)
    assert tok2.to_state() == tok.to_state() and config2.num_key_value_heads == 2
    for k in state:
        torch.testing.assert_close(state2[k], state[k], atol=0, rtol=0)
    x = ids_batch(vocab)
    with torch.no_grad():
        torch.testing.assert_close(ours(state2, config2)(x).logits, ours(state, config)(x).logits, atol=0, rtol=0)

"""GPU paths: bf16/fp16 mixed-precision training, nccl DDP on one GPU, generation on CUDA, LoRA under
autocast. Marked `cuda`: skipped cleanly on a machine without a CUDA GPU (CI has none).

    pytest -m cuda tests/test_cuda.py
"""
import sys

import pytest
import torch

from factories import REPO, make_checkpoint, make_model, run_python

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_training_keeps_fp32_checkpoints(tmp_path, chat_data, dtype):
    from checkpoint.pth import load_checkpoint
    base = make_checkpoint(tmp_path / "out" / "pretrain_64.pth", stage="pretrain")
    r = run_python(["trainer/train_full_sft.py", "--base", str(base), "--data_path", str(chat_data), "--out_dir",
                    str(tmp_path / "out"), "--device", "cuda", "--dtype", dtype, "--max_steps", "6",
                    "--batch_size", "4", "--max_seq_len", "64", "--log_interval", "1"], cwd=REPO)
    assert "saved" in r.stdout.strip().splitlines()[-1]
    ckpt = load_checkpoint(tmp_path / "out" / "full_sft_64.pth")
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values())
    assert ckpt["meta"]["train_config"]["dtype"] == dtype
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_nccl_ddp_on_one_gpu(tmp_path, chat_data):
    base = make_checkpoint(tmp_path / "out" / "full_sft_64.pth")
    run_python(["-m", "torch.distributed.run", "--nproc_per_node", "1", "trainer/train_lora.py", "--base",
                str(base), "--data_path", str(chat_data), "--out_dir", str(tmp_path / "out"), "--device", "cuda",
                "--lora_name", "gpu", "--max_steps", "4", "--batch_size", "4", "--max_seq_len", "64"], cwd=REPO)
    assert (tmp_path / "out" / "lora" / "gpu_64.pth").exists()


def test_generation_on_cuda_equals_cpu(tokenizer):
    from inference.generate import generate
    model = make_model(tokenizer.vocab_size, std=0.3, tie_word_embeddings=False)
    prompts = [tokenizer.encode("hello there"), tokenizer.encode("音乐")]
    cpu = generate(model.eval(), prompts, max_new_tokens=12)
    gpu = generate(model.cuda(), prompts, max_new_tokens=12)
    assert cpu == gpu


def test_lora_under_autocast_matches_fp32():
    from model.lora import LoRALinear
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(64, 96), r=4, alpha=8).cuda()
    torch.nn.init.normal_(layer.lora_B.weight, std=0.1)
    x = torch.randn(2, 5, 64, device="cuda")
    ref = layer(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() < 5e-2


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))

"""Shared pytest fixtures: the repo root on sys.path, a tiny model config and a tiny checkpoint."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: slower end-to-end test")


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer():
    from model.tokenizer import load_default_tokenizer
    return load_default_tokenizer()


@pytest.fixture
def tiny_config(tokenizer):
    from model.config import get_preset
    return get_preset("tiny", vocab_size=tokenizer.vocab_size)


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_config, tokenizer):
    """A saved tiny full-SFT-stage checkpoint with random weights; returns its path."""
    from model.checkpoint import save_checkpoint
    from model.model import TinyMindForCausalLM
    torch.manual_seed(0)
    model = TinyMindForCausalLM(tiny_config)
    path = tmp_path / "out" / "full_sft_64.pth"
    save_checkpoint(path, model.state_dict(), tiny_config, tokenizer, {"stage": "full_sft", "step": 0})
    return path

"""Shared pytest set-up: the repo root on sys.path, the cuda/slow markers, and fixtures over the factories in
tests/factories.py (a tiny checkpoint, a LoRA adapter on it, a chat JSONL file, one CPU thread, the benchmark
fixture items as the fetched tasks).

    python -m pytest -q tests/
"""
import shutil

import pytest
import torch

from factories import REPO, default_tokenizer, make_adapter, make_checkpoint, write_chat
from model.config import get_preset


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
    return default_tokenizer()


@pytest.fixture
def tiny_config(tokenizer):
    return get_preset("tiny", vocab_size=tokenizer.vocab_size)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A saved tiny full-SFT-stage checkpoint with random weights (out/full_sft_64.pth); returns its path."""
    return make_checkpoint(tmp_path / "out" / "full_sft_64.pth")


@pytest.fixture
def tiny_adapter(tmp_path, tiny_checkpoint):
    """A LoRA adapter with non-zero B recorded on tiny_checkpoint (out/lora/lora_test_64.pth); returns its path."""
    path = tmp_path / "out" / "lora" / "lora_test_64.pth"
    make_adapter(path, tiny_checkpoint)
    return path


@pytest.fixture
def chat_data(tmp_path):
    """chat.jsonl with 24 short random conversations; returns its path."""
    return write_chat(tmp_path / "chat.jsonl")


@pytest.fixture
def bench_cache(tmp_path, monkeypatch):
    """$TINYMIND_CACHE with the shipped fixture items (tests/data/benchmarks) as the fetched tasks."""
    shutil.copytree(REPO / "tests" / "data" / "benchmarks", tmp_path / "cache" / "benchmarks")
    monkeypatch.setenv("TINYMIND_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def one_thread():
    """One torch CPU thread for the test (tiny models run no slower, and runs do not oversubscribe)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

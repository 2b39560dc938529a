"""Shared fixtures: an isolated COMPDD_HOME, offline Hub settings, and generated sample ImageNet trees.

Keep additions topic-specific fixtures in the topic's own test module.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing at test time may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny tensors: one intra-op thread avoids spin-wait overhead that made them 5x slower on 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own COMPDD_HOME, so caches never leak between tests or into ~/.cache."""
    home = tmp_path_factory.mktemp("compdd-home")
    monkeypatch.setenv("COMPDD_HOME", str(home))
    return home


_SAMPLES: dict[tuple, Path] = {}


@pytest.fixture(scope="session")
def make_sample(tmp_path_factory: pytest.TempPathFactory):
    """Factory for sample ImageNet trees, cached per argument set for the whole session.

    ``make_sample(("bird-easy", "bird-hard"), train=24, val=8, size=32)`` -> root path.
    """
    from compdd.sample import make_sample_imagenet

    def make(subsets: tuple[str, ...] = ("bird-easy", "bird-hard"), train: int = 24, val: int = 8,
             size: int = 32, seed: int = 0) -> Path:
        key = (tuple(subsets), train, val, size, seed)
        if key not in _SAMPLES:
            root = tmp_path_factory.mktemp("sample-in1k") / "in1k"
            make_sample_imagenet(root, list(subsets), train_per_class=train, val_per_class=val, size=size,
                                 seed=seed, progress=False)
            _SAMPLES[key] = root
        return _SAMPLES[key]

    return make


@pytest.fixture(scope="session")
def sample_root(make_sample) -> Path:
    """The default small tree: bird-easy + bird-hard, 24 train / 8 val images per class, 32 px."""
    return make_sample()

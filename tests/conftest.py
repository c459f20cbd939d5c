"""Shared fixtures: a tiny synthetic dataset and its views, built once per test session."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local.common.config import load_config  # noqa: E402

# conf/tiny.yml of the end-to-end tests (run.sh in a scratch folder): 2 sources, half-second mixtures, seconds to train
TINY_RECIPE = {
    "base": ["base/lstm.yml"],
    "data": {"n_src": 2, "mixture_seconds": 0.5, "n_mixtures": {"train": 32, "val": 8, "test": 6},
             "file_selection_range": {"train": [0, 4], "val": [4, 5], "test": [5, 6]},
             "synth": {"clips_per_category": 6, "min_seconds": 1.0, "max_seconds": 1.5}},
    "model": {"hidden_size": 16, "n_layers": 1},
    "training": {"epochs": 2, "batch_size": 8, "num_workers": 0},
    "eval": {"n_examples": 2},
}

TINY_OVERRIDES = [
    "data.synth.clips_per_category=6",
    "data.synth.min_seconds=1.0",
    "data.synth.max_seconds=1.6",
    "data.mixture_seconds=0.5",
    "data.n_mixtures={train: 24, val: 8, test: 6}",
    "data.file_selection_range={train: [0, 4], val: [4, 5], test: [5, 6]}",
]


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config("lstm_2src", TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_cfg):
    """data/synth prepared with the tiny settings, with 2-source views: (data_dir, cfg)."""
    from local.data.prepare import prepare
    from local.data.views import make_views

    data_dir = tmp_path_factory.mktemp("data") / "synth"
    prepare(tiny_cfg["data"], data_dir)
    make_views(tiny_cfg["data"], data_dir)
    return data_dir, tiny_cfg

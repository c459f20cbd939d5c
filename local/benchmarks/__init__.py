"""Benchmarks: scripts that print figures and write JSON, run as `python -m local.benchmarks.<name>`
(models, storage, eval, resume, dpcl, kmeans, assignment, budget, budget_matrix, screen, workers, ...).
Never imported by the recipe itself."""


def trained_experiment(tag, exp_dir="exp", data_root="data"):
    """(test ViewDataset, best model) of a trained experiment, from the directory holding data/ and exp/."""
    from pathlib import Path

    from local.common.config import load_config
    from local.data.dataset import ViewDataset
    from local.data.sources import load_sources
    from local.models import load_model

    cfg = load_config(tag)
    data_dir = Path(data_root) / cfg["data"]["dataset"]
    _, root = load_sources(data_dir)
    dataset = ViewDataset(data_dir / f"{cfg['data']['n_src']}src" / "test.csv", root)
    return dataset, load_model(Path(exp_dir) / tag / "best_model.pth")


def publish(result, out):
    """Print a benchmark's result and write it as JSON."""
    import json
    from pathlib import Path

    from local.common import io_utils

    print(json.dumps(result, indent=2))
    io_utils.write_json(result, Path(out))
    print(f"wrote {out}")
    return result

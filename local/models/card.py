"""Model cards: `best_model.pth` as a package that Asteroid loads and publishes.

Asteroid's `BaseModel.from_pretrained(path)` rebuilds a model from `model_name` + `model_args` + `state_dict`, looking
the class up by name among the models registered with Asteroid; `local/models/__init__.py` registers every family of
this repository (`asteroid.models.register_model`), so after `import local.models` a package of any family loads
outside the recipes. Asteroid's `save_publishable` (asteroid/models/publisher.py) further needs the dataset's name
and the licenses of the training data (local/data/licenses.py), and takes the training config and the final metrics:
stage 2 writes the first three into `best_model.pth` (`model_card`), stage 3 writes the published copy with the test
metrics
(`exp/<tag>/publish/model.pth`, `publish`). The metrics are not written into `best_model.pth` itself: stage 3
identifies the model it evaluated by that file's hash, which must not change when stage 3 runs.
"""
import contextlib
import io
import os
from pathlib import Path


def model_card(package, cfg, licenses):
    """An Asteroid `serialize()` package with the card's fields: dataset, licenses, training config."""
    package = dict(package)
    package["dataset"] = cfg["data"]["dataset"]
    package["licenses"] = list(licenses)
    package["infos"] = {**package["infos"], "training_config": cfg}
    return package


def publish(model_path, metrics, cfg, recipe):
    """Asteroid's `save_publishable` on a card: `<exp>/publish/model.pth` with the final metrics added."""
    import torch
    from asteroid.models.publisher import save_publishable

    package = torch.load(model_path, map_location="cpu", weights_only=True)
    if not {"dataset", "licenses"} <= set(package):
        return None  # a package of an earlier version: re-train (stage 2) to get a card
    publish_dir = Path(model_path).parent / "publish"
    staging = Path(model_path).parent / ".publish.tmp"  # Asteroid writes in place: write aside, then rename
    with contextlib.redirect_stdout(io.StringIO()):  # Asteroid prints an invitation to upload to Zenodo
        save_publishable(str(staging), package, metrics=metrics, train_conf=cfg, recipe=recipe)
    publish_dir.mkdir(exist_ok=True)
    os.replace(staging / "model.pth", publish_dir / "model.pth")
    staging.rmdir()
    return publish_dir / "model.pth"

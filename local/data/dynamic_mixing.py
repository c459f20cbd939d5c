"""Dynamic mixing: new training mixtures every epoch from the same training files.

The standard augmentation of separation recipes (SpeechBrain's SepFormer recipes gain about 2 dB with it on
WSJ0-2mix): instead of the fixed training views of stage 1, each epoch draws new ones from the same files of
the training split, so the model rarely sees the same mixture twice. With views this costs nothing: a mixture
is a row drawn on the fly.

Reproducible and exactly resumable: the batch sampler hands out `epoch * n + i` (`EpochBatchSampler` with
`epoch_in_index`), and item i of epoch e is drawn from its own random stream seeded by (view_seed, n_src, e,
i) with its own domain tag (local/common/seeding.py), so any worker, any process count and a resumed run build
the same mixture for the same step. Epoch 0 is the stage-1 view CSV itself, so the first epoch equals that of a
run without dynamic mixing. Validation and test views stay fixed. `data.augmentation` perturbs the sources of
epochs >= 1 (local/data/augmentation.py).
"""
from pathlib import Path

from local.common import seeding
from local.common.errors import RecipeError
from local.data import augmentation
from local.data.dataset import ViewDataset
from local.data.sources import load_sources
from local.data.views import check_enough_labels, draw_view, split_candidates


class DynamicMixingDataset(ViewDataset):
    """The training views of stage 1 for epoch 0, then fresh draws: item `epoch * len(self) + i`."""

    def __init__(self, csv_path, data_dir, data_cfg):
        sources, root = load_sources(data_dir)
        super().__init__(csv_path, root)
        self.candidates = split_candidates(sources, data_cfg)["train"]
        self.labels = check_enough_labels(self.candidates, self.n_src)
        self.length = int(round(float(data_cfg["mixture_seconds"]) * self.sample_rate))
        self.level_db_range = [float(v) for v in data_cfg["level_db_range"]]
        self.seed = int(data_cfg["view_seed"])
        self.policy = data_cfg.get("mixing_policy", "t0")
        self.min_overlap = float(data_cfg["min_overlap"])
        self.augmenter = augmentation.Augmenter(augmentation.settings(data_cfg), self.seed, self.n_src)

    def view(self, epoch, index):
        """The view row of item `index` in `epoch` (epoch 0: the stage-1 CSV's row)."""
        if epoch == 0:
            return self.df.iloc[index].to_dict()
        rng = seeding.stream("dynamic_mixing", self.seed, self.n_src, epoch, index)
        return draw_view(self.candidates, self.labels, self.root, self.n_src, self.length, self.sample_rate,
                         self.level_db_range, rng, f"train_e{epoch}_{index:06d}", self.policy, self.min_overlap,
                         self.cache)[0]

    def drawn(self, epoch, index):
        """(view row, mixture, sources) of item `index` in `epoch`, its sources perturbed (data.augmentation)."""
        perturb = None
        if epoch > 0 and self.augmenter:
            rng = self.augmenter.stream(epoch, index)
            perturb = lambda segment: self.augmenter.perturb(segment, self.sample_rate, rng)  # noqa: E731
        row = self.view(epoch, index)
        return (row, *self.mix(row, index, perturb))

    def __getitem__(self, code):
        return self.drawn(*divmod(int(code), len(self)))[1:]


def dynamic_mixing_dataset(csv_path, data_cfg):
    """The training set of `data.dynamic_mixing: true`, or a clear refusal where it does not apply."""
    from local.data.scp import SCP_FORMATS
    from local.data.sources import dataset_format

    data_dir = Path(csv_path).parent.parent
    if dataset_format(data_dir) in SCP_FORMATS:
        raise RecipeError("data.dynamic_mixing: the wsj0-2mix / LibriMix lists pair fixed utterances (s1, s2 are "
                          "folders, not speakers); dynamic mixing needs a dataset of labelled source files. Set it "
                          "to false.")
    return DynamicMixingDataset(csv_path, data_dir, data_cfg)


def check_augmentation(data_cfg):
    """`data.augmentation` applies to dynamically mixed training items only: refuse it without them."""
    if augmentation.settings(data_cfg) and not data_cfg.get("dynamic_mixing"):
        raise RecipeError("data.augmentation perturbs dynamically mixed training sources: set "
                          "data.dynamic_mixing: true, or set data.augmentation's speed and eq_db to 0")

"""Command-line entry of the recipe stages, called by run.sh (one stage per call).

    python -m local.recipe {prepare,views,train,eval,report} --tag TAG [--data_dir DIR] [--dataset NAME]
                           [--data_root data] [--exp_dir exp] [--nj N] [group.key=value ...]

It loads the experiment config (conf/<tag>.yml + overrides), works out the paths
(data/<dataset>/, data/<dataset>/<n>src/, exp/<tag>/) and runs the stage. A RecipeError ends it with
a one-line message and exit status 1.
"""
import argparse
from pathlib import Path

from local.common.config import load_config, override_keys
from local.common.errors import RecipeError, exit_on_recipe_error
from local.common.frozen import evaluation_config
from local.common.ownership import ExperimentOwnership
from local.data.prepare import GENERATED

STAGES = ("prepare", "views", "train", "eval", "report")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m local.recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--tag", required=True, help="experiment name = config file conf/<tag>.yml")
    parser.add_argument("--data_dir", default="", help="dataset on disk (sets data.source_dir)")
    parser.add_argument("--dataset", default="", help="name of data/<dataset>/ (sets data.dataset)")
    parser.add_argument("--data_root", default="data", help="where prepared datasets and views go")
    parser.add_argument("--exp_dir", default="exp", help="where experiments go: <exp_dir>/<tag>/")
    parser.add_argument("--nj", type=int, default=1, help="parallel jobs (evaluation metrics)")
    parser.add_argument("--allow_change", default="", help="config keys an existing experiment may continue with "
                        "changed (space or comma separated), e.g. 'optim.lr training.epochs'")
    parser.add_argument("--grid", default="", help="report: a grid file whose cells get a status table")
    parser.add_argument("--compare", default="", help="report: 'TAG_A TAG_B', the paired difference B - A of their "
                        "SI-SDRi and SDRi on the same test views, with its 95 %% bootstrap interval")
    parser.add_argument("overrides", nargs="*", help="config overrides group.key=value")
    return parser.parse_intermixed_args(argv)


# What `./run.sh --data_dir <your folder of categories>` adds to the tag's config (issue 20, item 7). Measured on a
# package of recordings the model never heard, at the default 14 epochs: dynamic mixing with speed perturbation
# +1.19 dB [0.53, 1.88] over fixed views (docs/benchmarks.md, "Augmentation on small real datasets"); 15 minutes
# of training at most. Options given on the command line win; a dataset format named there is not a folder.
FOLDER_DEFAULTS = ("data.dynamic_mixing=true", "data.augmentation.speed=0.1", "training.max_minutes=15")


def resolve_config(args):
    """(merged config, the overrides the command line gave, --data_dir and --dataset included; not the folder
    defaults, which are no one's explicit choice)."""
    overrides, defaults = list(args.overrides), []
    if args.data_dir:
        source = Path(args.data_dir).expanduser().resolve()
        overrides.append(f"data.source_dir={source}")
        # the prepared dataset is named after the folder, whatever name the config gives its own data
        # (a speaker config would otherwise store a user's folder under data/synth_speakers/)
        if not args.dataset and not any(o.startswith("data.dataset=") for o in overrides):
            overrides.append(f"data.dataset={source.name}")
        if not any(o.startswith("data.format=") for o in overrides):
            generator = load_config(args.tag, overrides)["data"]["format"]
            if generator in GENERATED:  # the config's generator: the folder replaces it
                overrides.append("data.format=folder")
            if generator in ("auto", "synth"):  # categories: the measured folder defaults, below the options
                defaults = list(FOLDER_DEFAULTS)
    if args.dataset:
        overrides.append(f"data.dataset={args.dataset}")
    return load_config(args.tag, [*defaults, *overrides]), overrides


@exit_on_recipe_error
def main(argv=None):
    args = parse_args(argv)
    if args.nj < 1:
        raise RecipeError(f"--nj must be at least 1, got {args.nj}")
    exp_root = Path(args.exp_dir)
    if args.stage == "report":
        from local.evaluation.report import compare, report

        if args.compare:
            tags = args.compare.split()
            if len(tags) != 2:
                raise RecipeError(f"--compare takes two tags, e.g. --compare lstm_2src vtf_2src; got {args.compare!r}")
            compare(exp_root, *tags)
        else:
            report(exp_root, grid=args.grid or None)
        return
    cfg, overrides = resolve_config(args)
    exp_dir = exp_root / args.tag
    if args.stage == "eval" and (exp_dir / "conf.yml").is_file():
        cfg = evaluation_config(exp_dir / "conf.yml", cfg, override_keys(overrides))
    data_dir = Path(args.data_root) / cfg["data"]["dataset"]
    if args.stage == "prepare":
        from local.data.prepare import prepare

        prepare(cfg["data"], data_dir)
    elif args.stage == "views":
        from local.data.views import make_views

        make_views(cfg["data"], data_dir)
    else:
        from local.data.sources import load_sources
        from local.data.views import make_views

        _, root = load_sources(data_dir)
        # A config may need views stage 1 has not made yet (e.g. 5 sources): make them now, quietly
        # when they are already there.
        views = make_views(cfg["data"], data_dir, announce_skip=False)
        with ExperimentOwnership(exp_dir):  # one process trains or evaluates an experiment at a time
            if args.stage == "train":
                from local.training.train import train

                train(cfg, exp_dir, views, root, allow_change=args.allow_change.replace(",", " ").split())
            else:
                from local.evaluation.evaluate import evaluate

                evaluate(cfg, exp_dir, views, root, nj=args.nj)


if __name__ == "__main__":
    main()

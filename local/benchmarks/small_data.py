"""Benchmark: augmentation on small real datasets (issue 20, item 5), paired on the same test mixtures.

    python -m local.benchmarks.small_data --listing egs/debian_sounds/downloads/debian_sounds \
        --work exp/benchmarks/small_data --epochs 6

A researcher's own folder has a few dozen recordings per category; debian_sounds has up to 180 drum hits of a
kind. Two protocols built from the debian_sounds listing (stage 0 of egs/debian_sounds) bring it down to that:

- `small30`: at most 30 training files per category (a seeded choice), validation and test as listed;
- `lopo`: leave one package out: every test sound comes from `--held_out` (default sonic-pi-samples, recorded
  apart from the drum kits of the others), on the categories the other packages also have; training and
  validation files come from the other packages (15 % of each category's files for validation, at most 30 for
  training), so the model is tested on recordings of a library it never heard.

Each protocol is a `listing` folder (links to the unpacked packages plus listing.csv) and is trained with the
project's folder default (`./run.sh --data.format listing`) for `--epochs` epochs in each arm:
fixed views; dynamic mixing (new files, offsets and levels every epoch); dynamic mixing with speed
perturbation; dynamic mixing with equalisation. The same seed, the same test views; gains are paired per test
mixture (bootstrap 95 % intervals): dynamic mixing against fixed views, each perturbation against dynamic
mixing alone, and dynamic mixing with speed perturbation against fixed views (among the arms run: `--arms`).
Figures of an earlier run with the same settings stay in `--out`; the protocols run again replace theirs.

Fine-tuning (issue 20, item 6), with `--pretrain_listing DIR` (a `debian_all` folder: stage 0 of
egs/pretrain_sounds): on `lopo`, a model pretrained for `--epochs` epochs on every sound of that listing except
the held-out package's, then fine-tuned for `--epochs` epochs (`training.init_from`), against one trained from
scratch for twice `--epochs` on `lopo`: the same total number of training mixtures, so the same CPU time (an
epoch of either set is `data.n_mixtures.train` mixtures of the same length). Both with dynamic mixing.
Epochs, not minutes, so that the figures do not depend on what else runs on the machine. Run
again in the same `--work`, it reuses finished arms.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from local.benchmarks import publish
from local.benchmarks.budget import overlapping_rows
from local.common import seeding
from local.evaluation.uncertainty import paired_difference

ROOT = Path(__file__).resolve().parents[2]
ARMS = {
    "fixed": ["--data.dynamic_mixing", "false"],
    "dynamic": ["--data.dynamic_mixing", "true"],
    "dynamic_speed": ["--data.dynamic_mixing", "true", "--data.augmentation.speed", "0.1"],
    "dynamic_eq": ["--data.dynamic_mixing", "true", "--data.augmentation.eq_db", "6"],
}
PAIRS = (("fixed", "dynamic"), ("dynamic", "dynamic_speed"), ("dynamic", "dynamic_eq"), ("fixed", "dynamic_speed"))
FINETUNE_PAIR = ("scratch_twice", "finetuned")
MAX_TRAIN = 30


def _cap(rows, limit, rng):
    """At most `limit` rows, a seeded choice."""
    if len(rows) <= limit:
        return rows
    return rows.iloc[sorted(rng.choice(len(rows), size=limit, replace=False))]


def small30(listing, seed=0):
    """The listing with at most MAX_TRAIN training files per category."""
    rng = seeding.stream("protocol", seed, 0)
    parts = [listing[listing["split"] != "train"]]
    for _, rows in listing[listing["split"] == "train"].sort_values("path").groupby("label", sort=True):
        parts.append(_cap(rows, MAX_TRAIN, rng))
    return pd.concat(parts).sort_values("path")


def leave_one_package_out(listing, held_out, seed=0):
    """Test: `held_out`'s files; train and val: the other packages', on the categories both sides have."""
    rng = seeding.stream("protocol", seed, 1)
    test, rest = listing[listing["package"] == held_out], listing[listing["package"] != held_out]
    labels = sorted(set(test["label"]) & set(rest["label"]))
    out = [test[test["label"].isin(labels)].assign(split="test")]
    for label in labels:
        rows = rest[rest["label"] == label].sort_values("path")
        order = rng.permutation(len(rows))
        n_val = max(1, int(round(0.15 * len(rows))))
        out.append(rows.iloc[sorted(order[:n_val])].assign(split="val"))
        out.append(_cap(rows.iloc[sorted(order[n_val:])], MAX_TRAIN, rng).assign(split="train"))
    return pd.concat(out).sort_values("path")


def pretraining_rows(listing, held_out, seed=0):
    """Every listed file except `held_out`'s, split again per category (15 % val, 15 % test, at least one each):
    the held-out package took some categories' only validation and test files with it. Pretraining uses its
    validation split only (stage 2), so nothing of the held-out package reaches it."""
    rng = seeding.stream("protocol", seed, 2)
    rest = listing[(listing["package"] != held_out) & (listing["split"] != "")]
    out = []
    for _, rows in rest.sort_values("path").groupby("label", sort=True):
        if len(rows) < 3:  # too few to give every split a file: left out (stage 1 would refuse the category)
            continue
        order = rng.permutation(len(rows))
        n = max(1, int(round(0.15 * len(rows))))
        out += [rows.iloc[sorted(order[:n])].assign(split="val"),
                rows.iloc[sorted(order[n : 2 * n])].assign(split="test"),
                rows.iloc[sorted(order[2 * n :])].assign(split="train")]
    return pd.concat(out).sort_values("path")


def write_protocol(listing_dir, name, rows, work):
    """A listing folder: one link per top-level folder of the original, and listing.csv."""
    folder = work / "folders" / name
    folder.mkdir(parents=True, exist_ok=True)
    for top in sorted({p.split("/")[0] for p in rows["path"]}):
        link = folder / top
        if not link.exists():
            link.symlink_to((listing_dir / top).resolve())
    previous = (folder / "listing.csv").read_text() if (folder / "listing.csv").is_file() else None
    rows.to_csv(folder / "listing.csv", index=False)
    if previous is not None and previous != (folder / "listing.csv").read_text():  # the protocol changed: its
        shutil.rmtree(work / "data" / name, ignore_errors=True)  # prepared data and views are stale
        print(f"{name}: the protocol's listing changed; rebuilding {work / 'data' / name}", flush=True)
    counts = rows.groupby(["split"]).size().to_dict()
    print(f"{name}: {rows['label'].nunique()} categories, files per split {counts}", flush=True)
    return folder


def run_arm(protocol, folder, arm, epochs, work, extra, options=None, stop_stage=3):
    exp = work / f"exp_{protocol}_{arm}"
    done = exp / "lstm_2src_sisdr" / ("eval/metrics.csv" if stop_stage == 3 else "best_model.pth")
    if done.is_file():
        print(f"{protocol} {arm}: reusing {done}", flush=True)
        return pd.read_csv(done) if stop_stage == 3 else None
    log = work / f"{protocol}_{arm}.log"
    command = [str(ROOT / "run.sh"), "--stage", "0", "--stop_stage", str(stop_stage), "--dataset", protocol,
               "--data.format", "listing", "--data_dir", str(folder), "--data.file_selection_range", "null",
               "--exp_dir", str(exp), "--training.epochs", str(epochs), *(ARMS[arm] if options is None else options),
               *extra]
    print("$ " + " ".join(command), flush=True)
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=work, stdout=out, stderr=subprocess.STDOUT, env=os.environ)
    if done.returncode != 0:
        sys.exit(f"small_data: {protocol} {arm} failed (exit {done.returncode}); see {log}")
    return pd.read_csv(exp / "lstm_2src_sisdr" / "eval" / "metrics.csv") if stop_stage == 3 else None


def finetuning(pretrain_dir, held_out, lopo_folder, epochs, work, extra):
    """Pretrain on the pretraining listing without the held-out package, fine-tune on lopo; and scratch for
    twice the epochs on lopo. Returns their paired comparison on lopo's test mixtures."""
    rows = pretraining_rows(pd.read_csv(Path(pretrain_dir) / "listing.csv", keep_default_na=False), held_out)
    folder = write_protocol(Path(pretrain_dir), "pretrain", rows, work)
    dynamic = ["--data.dynamic_mixing", "true"]
    run_arm("pretrain", folder, "dynamic", epochs, work, extra, dynamic, stop_stage=2)
    pretrained = work / "exp_pretrain_dynamic" / "lstm_2src_sisdr"
    per_arm = {"finetuned": run_arm("lopo", lopo_folder, "finetuned", epochs, work, extra,
                                    [*dynamic, "--init_from", str(pretrained)]),
               "scratch_twice": run_arm("lopo", lopo_folder, "scratch_twice", 2 * epochs, work, extra, dynamic)}
    both = per_arm["scratch_twice"].merge(per_arm["finetuned"], on="mixture_id", suffixes=("_a", "_b"))
    return {"pretrain_files": int(len(rows)), "pretrain_labels": int(rows["label"].nunique()),
            "arms": {arm: float(m["si_sdri"].mean()) for arm, m in per_arm.items()},
            "paired_gain": {"baseline": FINETUNE_PAIR[0], "arm": FINETUNE_PAIR[1],
                            **paired_difference(both["si_sdri_a"], both["si_sdri_b"])}}


def summarise(per_arm):
    rows = {arm: {"si_sdri": float(m["si_sdri"].mean()), "n_mixtures": int(len(m)),
                  "si_sdri_overlapping": float(overlapping_rows(m)["si_sdri"].mean())} for arm, m in per_arm.items()}
    gains = []
    for a, b in [(a, b) for a, b in PAIRS if a in per_arm and b in per_arm]:
        both = per_arm[a].merge(per_arm[b], on="mixture_id", suffixes=("_a", "_b"))
        gains.append({"baseline": a, "arm": b, **paired_difference(both["si_sdri_a"], both["si_sdri_b"])})
    return {"arms": rows, "paired_gains": gains}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listing", default="egs/debian_sounds/downloads/debian_sounds",
                        help="the debian_sounds folder with listing.csv (stage 0 of egs/debian_sounds)")
    parser.add_argument("--work", default="exp/benchmarks/small_data")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--held_out", default="sonic-pi-samples", help="lopo: the package tested on")
    parser.add_argument("--protocols", nargs="+", choices=("small30", "lopo"), default=["small30", "lopo"])
    parser.add_argument("--arms", nargs="*", choices=tuple(ARMS), default=list(ARMS),
                        help="augmentation arms to run (none: only fine-tuning, with --pretrain_listing)")
    parser.add_argument("--pretrain_listing", default=None,
                        help="a debian_all folder (egs/pretrain_sounds stage 0): also measure fine-tuning on lopo")
    parser.add_argument("--out", default="egs/debian_sounds/small_data.json")
    parser.add_argument("extra", nargs="*", help="more run.sh options, after --")
    args = parser.parse_args(argv)
    listing_dir = Path(args.listing).resolve()
    if not (listing_dir / "listing.csv").is_file():
        sys.exit(f"small_data: {listing_dir}/listing.csv not found: run stage 0 of egs/debian_sounds first")
    listing = pd.read_csv(listing_dir / "listing.csv", keep_default_na=False)
    listing = listing[listing["split"] != ""]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    builders = {"small30": lambda: small30(listing), "lopo": lambda: leave_one_package_out(listing, args.held_out)}
    # figures of earlier runs with the same settings stay in --out; what this run measures replaces its part
    settings = {"epochs": args.epochs, "held_out": args.held_out, "max_train_files_per_category": MAX_TRAIN,
                "extra": args.extra}
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    result = previous if all(previous.get(k) == v for k, v in settings.items()) else {**settings, "protocols": {}}
    command = " ".join(["python -m local.benchmarks.small_data", *(argv or sys.argv[1:])])
    result["commands"] = sorted({*result.pop("commands", [result.pop("command")] if "command" in result else []),
                                 command})
    for protocol in args.protocols:
        folder = write_protocol(listing_dir, protocol, builders[protocol](), work)
        if not args.arms:
            if protocol == "lopo" and args.pretrain_listing:
                result["finetuning"] = finetuning(args.pretrain_listing, args.held_out, folder, args.epochs, work,
                                                  args.extra)
            continue
        per_arm = {arm: run_arm(protocol, folder, arm, args.epochs, work, args.extra) for arm in args.arms}
        result["protocols"][protocol] = summarise(per_arm)
        print(json.dumps(result["protocols"][protocol], indent=1), flush=True)
        if protocol == "lopo" and args.pretrain_listing:
            result["finetuning"] = finetuning(args.pretrain_listing, args.held_out, folder, args.epochs, work,
                                              args.extra)
            print(json.dumps(result["finetuning"], indent=1), flush=True)
    publish(result, args.out)


if __name__ == "__main__":
    main()

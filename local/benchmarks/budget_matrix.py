"""The quality-per-CPU-minute matrix (issue 12): model family x training budget x dataset x dynamic mixing.

    python -m local.benchmarks.budget_matrix --out egs/BUDGET \
        synth=exp/benchmarks/budget_synth/budget.json debian_sounds=exp/benchmarks/budget_debian_sounds/budget.json
    python -m local.benchmarks.budget_matrix --out egs/budget_matrix --base egs/budget_matrix.json \
        debian_speech=egs/debian_speech/budget_dpcl_blstm.json     # add runs to the committed matrix

Merges the `budget.json` files that `local.benchmarks.budget` wrote (one per dataset, or several per dataset when
families were run in separate invocations) into one table, written as Markdown (`<out>.md`), JSON (`<out>.json`)
and a figure with one panel per dataset (`<out>.png`). A cell holds the mean SI-SDRi over all test mixtures with
its 95 % bootstrap interval, then the mean over mixtures whose sources overlap and the median; a budget a family
was not run for stays empty ("-") rather than being filled in. Where a run had both dynamic-mixing settings, a
second table gives the gain of dynamic mixing, paired on the same test mixtures, as that run computed it. Nothing
is measured here: every figure comes from the budget runs, which state their own command and machine.
"""
import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from local.benchmarks.budget import budget_axes, save_figure
from local.common import io_utils


def family(tag):
    """The model family of a category tag: lstm_2src_sisdr -> lstm, conv_tasnet_2src -> conv_tasnet."""
    return tag.split("_2src")[0].split("_3src")[0].split("_5src")[0].split("_2spk")[0]


def _require(entry, keys, path, what):
    """One line naming the file and the missing key, instead of a KeyError deep in the table code."""
    missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
    if missing:
        sys.exit(f"budget_matrix: {path}: a {what} lacks '{missing[0]}'; write the file with local.benchmarks.budget")


def load_base(path):
    """The rows and gains of an earlier matrix (its .json), keyed as `load` keys them, each keeping its dataset and
    source: a matrix grows by new runs while the budget.json files of the old ones may be gone from exp/."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        sys.exit(f"budget_matrix: cannot read the base matrix {path} ({err})")
    rows, gains = {}, {}
    for r in data.get("rows", []):
        _require(r, ("dataset", "tag", "dynamic_mixing", "minutes", "si_sdri"), path, "row")
        rows[(r["dataset"], r["tag"], bool(r["dynamic_mixing"]), float(r["minutes"]))] = r
    for g in data.get("dynamic_mixing_gain", []):
        _require(g, ("dataset", "tag", "minutes", "all", "overlapping"), path, "dynamic_mixing_gain entry")
        gains[(g["dataset"], g["tag"], float(g["minutes"]))] = g
    return rows, gains


def load(sources, base=None):
    """One row per (dataset, tag, dynamic mixing, minutes) from `dataset=path` pairs, and one per (dataset, tag,
    minutes) of paired dynamic-mixing gains; a later file wins a clash, and any file wins over the `base` matrix."""
    rows, gains = load_base(base) if base else ({}, {})
    for source in sources:
        name, sep, path = source.partition("=")
        if not sep or not name or not path:
            sys.exit(f"budget_matrix: '{source}' is not DATASET=PATH/budget.json")
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            sys.exit(f"budget_matrix: cannot read {path} ({err}); run local.benchmarks.budget first")
        for r in data.get("rows", []):
            _require(r, ("tag", "dynamic_mixing", "minutes", "si_sdri"), path, "row")
            key = (name, r["tag"], bool(r["dynamic_mixing"]), float(r["minutes"]))
            rows[key] = {"dataset": name, "family": family(r["tag"]), **r, "source": str(path)}
        for g in data.get("dynamic_mixing_gain", []):
            _require(g, ("tag", "minutes", "all", "overlapping"), path, "dynamic_mixing_gain entry")
            gains[(name, g["tag"], float(g["minutes"]))] = {"dataset": name, "family": family(g["tag"]), **g,
                                                            "source": str(path)}
    if not rows:
        sys.exit("budget_matrix: the files hold no rows")
    return pd.DataFrame(list(rows.values())), list(gains.values())


def _number(value):
    return "-" if value is None or pd.isna(value) else f"{value:.2f}"


def cell_text(r):
    """'mean [95 % interval] / overlapping mean / median' (a figure an older budget.json lacks shows as '-')."""
    ci = r.get("si_sdri_ci95")
    interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if isinstance(ci, (list, tuple)) else ""
    return (f"{_number(r.get('si_sdri'))}{interval} / {_number(r.get('si_sdri_overlapping'))} / "
            f"{_number(r.get('si_sdri_median'))}")


def markdown(table):
    """One row per dataset, family and dynamic-mixing setting; one column per budget."""
    minutes = sorted(table["minutes"].unique())
    head = ["dataset", "family (tag)", "dynamic mixing"] + [f"{m:g} min" for m in minutes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (dataset, tag, dynamic), group in table.groupby(["dataset", "tag", "dynamic_mixing"], sort=True):
        by_minutes = {float(r["minutes"]): r for _, r in group.iterrows()}
        cells = [cell_text(by_minutes[m]) if m in by_minutes else "-" for m in minutes]
        lines.append(f"| {dataset} | {family(tag)} ({tag}) | {'yes' if dynamic else 'no'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def gain_markdown(gains):
    """Dynamic minus fixed views, one row per dataset and family, one column per budget: 'all [95 %] /
    overlapping [95 %]' in dB SI-SDRi."""
    if not gains:
        return ""
    minutes = sorted({float(g["minutes"]) for g in gains})
    head = ["dataset", "family (tag)"] + [f"{m:g} min" for m in minutes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for dataset, tag in sorted({(g["dataset"], g["tag"]) for g in gains}):
        by_minutes = {float(g["minutes"]): g for g in gains if (g["dataset"], g["tag"]) == (dataset, tag)}
        cells = ["-" if m not in by_minutes else " / ".join(
            f"{by_minutes[m][part]['mean']:+.2f} [{by_minutes[m][part]['ci95'][0]:+.2f}, "
            f"{by_minutes[m][part]['ci95'][1]:+.2f}]" for part in ("all", "overlapping")) for m in minutes]
        lines.append(f"| {dataset} | {family(tag)} ({tag}) | " + " | ".join(cells) + " |")
    return ("\nDynamic mixing - fixed views, paired on the same test mixtures (dB SI-SDRi): all [95 %] / "
            "overlapping [95 %]\n\n" + "\n".join(lines) + "\n")


def figure(table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted(table["dataset"].unique())
    colour = {f: f"C{i}" for i, f in enumerate(sorted(table["tag"].map(family).unique()))}  # one per family, all panels
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.0 * len(datasets), 3.8), squeeze=False, sharey=False)
    for ax, dataset in zip(axes[0], datasets):
        part = table[table["dataset"] == dataset]
        for (tag, dynamic), line in part.groupby(["tag", "dynamic_mixing"], sort=True):
            line = line.sort_values("minutes")
            y = line.get("si_sdri_overlapping", line["si_sdri"]).fillna(line["si_sdri"])  # older files: all
            ax.plot(line["minutes"], y, "--" if dynamic else "-", marker="o", color=colour[family(tag)],
                    label=f"{family(tag)}{' + DM' if dynamic else ''}")
        budget_axes(ax, f"{dataset}: overlapping test mixtures")
    save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="path prefix of the .md, .json and .png written")
    parser.add_argument("--base", help="an earlier matrix's .json whose rows are kept (the files given win a clash)")
    parser.add_argument("sources", nargs="*", help="DATASET=path/to/budget.json, one or more per dataset")
    args = parser.parse_args(argv)
    if not args.sources and not args.base:
        parser.error("give DATASET=path/to/budget.json files, --base MATRIX.json, or both")
    table, gains = load(args.sources, args.base)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(table) + gain_markdown(gains)
    io_utils.write_json({"rows": json.loads(table.to_json(orient="records")), "dynamic_mixing_gain": gains},
                        out.with_suffix(".json"))
    io_utils.write_text(out.with_suffix(".md"), text)
    figure(table, out.with_suffix(".png"))
    print(text + f"wrote {out.with_suffix('.md')}, {out.with_suffix('.json')}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

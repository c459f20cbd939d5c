"""Breakdowns of an evaluation: which sounds are hard to separate, and how overlap matters.

Pure pandas over the per-source and per-mixture tables of stage 3, so that every figure of the
breakdowns can be traced back to (and checked against) the rows it averages.
"""
from local.data import activity

# Columns averaged in the breakdowns, in this order, when the evaluation has them.
FIGURES = ["input_si_sdr", "si_sdr", "si_sdri", "sdr", "sdri", "sir", "sar", "stoi", "pesq", "fixed_order_si_sdri",
           "oracle_psm_si_sdri", "oracle_ibm_si_sdri", "oracle_ratio_si_sdri"]


def per_category(per_source):
    """One row per label: how many sources, and the mean of each figure over them (worst first)."""
    columns = [c for c in FIGURES if c in per_source.columns]
    table = per_source.groupby("label")[columns].mean()
    table.insert(0, "n_sources", per_source.groupby("label").size())
    order = "si_sdri" if "si_sdri" in table.columns else columns[0]
    return table.sort_values(order).reset_index()


def overlap_seconds(sources, sample_rate):
    """How long every source of a mixture sounds at once (seconds), from its sources [n_src, T] as the loader
    placed them, by the activity measure stage 1 places them with (local/data/activity.py)."""
    return round(activity.overlap_samples(sources, sample_rate) / sample_rate, 4)


def overlap_bin(seconds):
    """The bin of `activity.overlap_shares` that an overlap falls in."""
    return next(name for name, share in activity.overlap_shares([seconds]).items() if share)


def per_overlap(metrics):
    """One row per overlap bin (how long the sources sound together), or None when every mixture falls in one."""
    if "overlap_seconds" not in metrics.columns:
        return None
    bins = metrics["overlap_seconds"].map(overlap_bin)
    if bins.nunique() < 2:
        return None
    order = {name: i for i, name in enumerate(activity.overlap_shares([0.0]))}
    columns = [c for c in FIGURES if c in metrics.columns]
    table = metrics.groupby(bins)[columns].mean()
    table.insert(0, "n_mixtures", metrics.groupby(bins).size())
    table.index.name = "overlap"
    return table.reset_index().sort_values("overlap", key=lambda b: b.map(order)).reset_index(drop=True)

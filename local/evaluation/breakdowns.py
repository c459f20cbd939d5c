"""Breakdowns of an evaluation: which sounds are hard to separate, and how overlap matters.

Pure pandas over the per-source and per-mixture tables of stage 3, so that every figure of the
breakdowns can be traced back to (and checked against) the rows it averages.
"""
import numpy as np

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


def max_overlap(sources):
    """The largest number of sources sounding at once in a mixture, from its sources [n_src, T] as the
    loader placed them (each source spans its first to its last non-zero sample)."""
    active = np.zeros(sources.shape[-1], dtype=int)
    for source in sources:
        nonzero = np.flatnonzero(source)
        if len(nonzero):
            active[nonzero[0]: nonzero[-1] + 1] += 1
    return int(active.max())


def per_overlap(metrics):
    """One row per value of `max_overlap`, or None when every mixture has the same (nothing to compare)."""
    if "max_overlap" not in metrics.columns or metrics["max_overlap"].nunique() < 2:
        return None
    columns = [c for c in FIGURES if c in metrics.columns]
    table = metrics.groupby("max_overlap")[columns].mean()
    table.insert(0, "n_mixtures", metrics.groupby("max_overlap").size())
    return table.reset_index()

"""The view CSV contract: the columns of a mixture row (local/data/views.py says what they mean).

One place for the column layout, read by stage 1 (views.py, scp.py) and by the loader (dataset.py).
"""
from pathlib import Path


def source_columns(i):
    return [f"path_{i}", f"label_{i}", f"start_{i}", f"end_{i}", f"mix_start_{i}", f"gain_db_{i}"]


def view_columns(n_src):
    cols = ["mixture_id", "length", "sample_rate"]
    for i in range(n_src):
        cols += source_columns(i)
    return cols


def views_dir(data_dir, n_src):
    return Path(data_dir) / f"{n_src}src"


def n_sources_of(columns):
    n = 0
    while f"path_{n}" in columns:
        n += 1
    return n


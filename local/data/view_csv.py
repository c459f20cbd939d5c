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


def views_dir(data_dir, n_src, n_classes=None, mixing_policy="t0"):
    """data/<dataset>/<n>src, with `_c<N>` for a pool of N classes and `_t1`/`_t2` for a mixing policy."""
    return Path(data_dir) / (f"{n_src}src" + (f"_c{n_classes}" if n_classes else "")
                             + (f"_{mixing_policy}" if mixing_policy not in (None, "t0") else ""))


def n_sources_of(columns):
    n = 0
    while f"path_{n}" in columns:
        n += 1
    return n


def check_views(df, csv_path, root):
    """Refuse a view table that stage 1 could not have written (a column deleted, a row edited, a file gone
    or shortened since), naming the file and row, before any training or evaluation starts."""
    import numpy as np
    import pandas as pd
    import soundfile as sf

    from local.common.errors import RecipeError

    fix = f"re-run stage 1 (delete {Path(csv_path).parent} first)"
    n_src = n_sources_of(df.columns)
    missing = [c for c in view_columns(max(n_src, 1)) if c not in df.columns]
    if missing:
        raise RecipeError(f"{csv_path} lacks column(s) {', '.join(missing)}: it is not a view CSV as stage 1 writes "
                          f"them; {fix}")
    numeric = ["length", "sample_rate"] + [f"{c}_{i}" for i in range(n_src)
                                           for c in ("start", "end", "mix_start", "gain_db")]
    values = df[numeric].apply(pd.to_numeric, errors="coerce")
    for column in numeric:
        bad = np.flatnonzero(values[column].isna().to_numpy())
        if len(bad):
            raise RecipeError(f"{csv_path} row {bad[0] + 2}: {column} = {df[column].iloc[bad[0]]!r} is not a number; {fix}")
    frames = {}
    for i in range(n_src):
        start, end, mix_start = (values[f"{c}_{i}"].to_numpy() for c in ("start", "end", "mix_start"))
        wrong = (start < 0) | (end <= start) | (mix_start < 0) | (mix_start >= values["length"].to_numpy())
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise RecipeError(f"{csv_path} row {row + 2}: source {i} has segment [{start[row]}, {end[row]}) placed at "
                              f"{mix_start[row]} in a mixture of {values['length'].iloc[row]} samples; {fix}")
        for row, (path, begin, stop) in enumerate(zip(df[f"path_{i}"].astype(str), start, end)):
            if path not in frames:
                try:
                    frames[path] = sf.info(str(Path(root) / path)).frames
                except Exception:
                    frames[path] = None
            if frames[path] is None:
                raise RecipeError(f"{csv_path} row {row + 2}: {Path(root) / path} is missing or unreadable; restore it "
                                  f"or {fix}")
            if stop > frames[path]:
                raise RecipeError(f"{csv_path} row {row + 2}: segment [{int(begin)}, {int(stop)}) lies outside "
                                  f"{Path(root) / path} ({frames[path]} samples): the file changed since stage 1; {fix}")

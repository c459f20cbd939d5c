"""Benchmark: do mixtures mean what they say? The level error of a broadband file and the overlap of views.

    python -m local.benchmarks.mixtures [--data_dir data/debian_sounds] [--n_src 2] [--sample_rate 8000]
                                        [--n_views 200] [--out exp/benchmarks/mixtures.json]

1. Level error: white noise at 44.1 kHz (1 s in a 2 s file, the rest silent), mixed at 8 kHz with a drawn level
   of -25 dBFS; the level of the loader's output over its active frames, with the gain stage 1 sets now
   (measured at the mixture rate over the active part) and with the gain the earlier measure set (RMS over the
   whole segment at the file's rate). The error is heard minus drawn, in dB.
2. Overlap (with --data_dir, a prepared dataset): the test split's views drawn with data.min_overlap 0 (as before
   the constraint) and with the default, and the share of mixtures at each overlap, measured on the loader's
   output by the evaluation's measure.
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from local.benchmarks import publish
from local.common import seeding
from local.common.config import load_config
from local.data import activity
from local.data.dataset import ViewDataset
from local.data.source_cache import SourceCache
from local.data.sources import load_sources
from local.data.view_csv import view_columns
from local.data.views import draw_view, make_split_views, split_candidates


def level_error(sample_rate=8000, file_rate=44100, target=-25.0):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        noise = np.zeros(2 * file_rate)
        noise[file_rate // 2 : file_rate // 2 + file_rate] = 0.1 * rng.standard_normal(file_rate)
        tone = 0.05 * np.sin(2 * np.pi * 440 * np.arange(2 * file_rate) / file_rate)
        for label, audio in (("noise", noise), ("tone", tone)):
            (tmp / label).mkdir()
            sf.write(str(tmp / label / "a.wav"), audio, file_rate, subtype="FLOAT")
        cands = {label: [{"path": f"{label}/a.wav", "sample_rate": file_rate, "num_samples": 2 * file_rate}]
                 for label in ("noise", "tone")}
        row, _ = draw_view(cands, ["noise", "tone"], tmp, 2, 2 * sample_rate, sample_rate, (target, target),
                           np.random.default_rng(0), "m0", "t0", 0.25)
        csv = tmp / "v.csv"
        pd.DataFrame([row], columns=view_columns(2)).to_csv(csv, index=False)
        source = ViewDataset(csv, tmp)[0][1][0].double().numpy()
    heard = activity.active_level_db(source, sample_rate)
    old_gain = target - activity.rms_db(noise)
    heard_old = heard - row["gain_db_0"] + old_gain
    return {"file": f"white noise, 1 s active in 2 s, {file_rate} Hz", "mixture_rate": sample_rate, "drawn_db": target,
            "error_db_now": round(heard - target, 3), "error_db_before": round(heard_old - target, 3)}


def overlap(data_dir, n_src, sample_rate, n_views):
    cfg = load_config("lstm_2src")["data"]
    sources, root = load_sources(data_dir)
    candidates = split_candidates(sources, {**cfg, "file_selection_range": cfg["file_selection_range"]})["test"]
    length = int(cfg["mixture_seconds"] * sample_rate)
    cache = SourceCache(Path(data_dir) / "cache", sample_rate)  # what stage 1 and the loader read
    out = {}
    for min_overlap in (0.0, float(cfg["min_overlap"])):
        df, _ = make_split_views(candidates, root, n_src, length, sample_rate, n_views, cfg["level_db_range"],
                                 seeding.stream("views", cfg["view_seed"], 2, n_src), "test", "t0", min_overlap,
                                 cache)
        with tempfile.TemporaryDirectory() as tmp:
            df.to_csv(Path(tmp) / "test.csv", index=False)
            dataset = ViewDataset(Path(tmp) / "test.csv", root, cache=cache)
            seconds = [activity.overlap_samples(dataset[i][1].numpy(), sample_rate) / sample_rate
                       for i in range(len(dataset))]
        out[f"min_overlap {min_overlap:g} s"] = {"shares": activity.overlap_shares(seconds),
                                                 "median_seconds": round(float(np.median(seconds)), 3)}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", help="a prepared dataset (data/<dataset>) for the overlap shares")
    parser.add_argument("--n_src", type=int, default=2)
    parser.add_argument("--sample_rate", type=int, default=8000)
    parser.add_argument("--n_views", type=int, default=200)
    parser.add_argument("--out", default="exp/benchmarks/mixtures.json")
    args = parser.parse_args(argv)
    result = {"level": level_error(args.sample_rate)}
    if args.data_dir:
        result["overlap"] = {"data_dir": args.data_dir, "n_src": args.n_src,
                             **overlap(Path(args.data_dir), args.n_src, args.sample_rate, args.n_views)}
    publish(result, args.out)


if __name__ == "__main__":
    main()

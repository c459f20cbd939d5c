"""Separate your own recordings (or an scp list of mixtures) with a trained experiment.

    utils/separate.sh --exp exp/<tag> --out DIR (--scp mix.scp | file.wav ...) [--window_seconds 8]
    utils/separate.sh --exp exp/<query tag> --out DIR (--query LABEL | --remove LABEL) file.wav ...
    utils/separate.sh --exp exp/<example tag> --out DIR --query_audio example.wav file.wav ...

Writes DIR/spk1/<key>, DIR/spk2/<key>, ... (one wav per estimated source, `<key>` being the scp key or
the file name; `.wav` is appended when the key has no extension), at each input's own sample rate,
as the earlier DPCL-DPRNN tools did. Inputs may have any sample rate (resampled to the model's and
back with torchaudio), any number of channels (downmixed), any length: files longer than the window
are processed in half-overlapping windows with Asteroid's `LambdaOverlapAdd`, which also keeps the
source order consistent from window to window. A query model (issue 23, local/models/query_lstm.py) writes only
the sound its `--query` label names (DIR/<label>/<key>), or with `--remove` the mixture minus that sound
(DIR/without_<label>/<key>); a query-by-example model, the sound like `--query_audio` (DIR/like_<clip>/<key>).
"""
import time
from pathlib import Path

import soundfile as sf
import torch
import torchaudio
from asteroid.dsp.overlap_add import LambdaOverlapAdd

from local.common import io_utils
from local.common.cli import separate_parser
from local.common.errors import RecipeError, exit_on_recipe_error
from local.data.scp import read_scp
from local.models import load_model, n_sources


def read_mono(path):
    """(float32 mono tensor [T], sample rate), or a clear error naming the file."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise RecipeError(f"cannot read audio file {path}: {err}") from None
    if len(audio) == 0:
        raise RecipeError(f"audio file {path} is empty")
    return torch.from_numpy(audio.mean(axis=1)), sr


class Separator:
    """A model plus the resampling and windowing around it: any mono signal at any rate -> [n_src, T] (a query
    model with its `query`: [1, T], the sound that label names)."""

    def __init__(self, model, window_seconds, query=None):
        model = model.eval()
        if getattr(model, "queried", False):
            self.model, self.n_src = (lambda x: model(x, query)), 1
        else:
            self.model, self.n_src = model, n_sources(model)
        self.sample_rate = int(model.sample_rate)
        self.window = int(window_seconds * self.sample_rate)
        self.ola = LambdaOverlapAdd(self.model, self.n_src, self.window, self.window // 2, window="hann",
                                    reorder_chunks=self.n_src > 1)

    @torch.inference_mode()
    def __call__(self, audio, sr):
        x = torchaudio.functional.resample(audio, sr, self.sample_rate) if sr != self.sample_rate else audio
        if len(x) > self.window:
            est = self.ola(x[None, None])[0]
        else:
            est = self.model(x[None])[0]
        if sr != self.sample_rate:
            est = torchaudio.functional.resample(est, self.sample_rate, sr)
        est = est[..., : len(audio)]
        return torch.nn.functional.pad(est, (0, len(audio) - est.shape[-1]))


def inputs_from(args):
    if args.scp:
        return list(read_scp(args.scp).items())
    if not args.wavs:
        raise RecipeError("give mixtures to separate: --scp FILE or one or more wav files")
    return [(Path(w).name, w) for w in args.wavs]


def query_of(model, query, remove, query_audio=None, query_seconds=1.0):
    """What a query model is asked for (a label, or an example clip at the model's rate), or None for a separator;
    one line for every mismatch."""
    queried = getattr(model, "queried", False)
    if (query or remove or query_audio) and not queried:
        raise RecipeError("--query, --remove and --query_audio need a query model (model.name query_lstm); this "
                          "experiment separates into all its sources: leave them out")
    if queried and getattr(model, "query_type", "label") == "example":
        if not query_seconds > 0:
            raise RecipeError(f"--query_seconds must be > 0, got {query_seconds}")
        if not query_audio:
            raise RecipeError("this model is queried by example: give --query_audio CLIP (a recording of the sound "
                              "to extract)")
        from local.data.queries import loudest_window

        clip, sr = read_mono(query_audio)
        if sr != model.sample_rate:
            clip = torchaudio.functional.resample(clip, sr, int(model.sample_rate))
        return loudest_window(clip, int(round(query_seconds * model.sample_rate)))
    if query_audio:
        raise RecipeError(f"this model is queried by label, not by example: give --query LABEL or --remove LABEL "
                          f"(its labels: {', '.join(model.labels)})")
    if queried and bool(query) == bool(remove):
        raise RecipeError(f"this is a query model: give one of --query LABEL or --remove LABEL (its labels: "
                          f"{', '.join(model.labels)})")
    label = query or remove
    if queried and label not in model.labels:
        raise RecipeError(f"unknown label {label!r}; this model knows {', '.join(model.labels)}")
    return label


def separate(exp, out, items, window_seconds=8.0, query=None, remove=None, query_audio=None, query_seconds=1.0):
    model_path = Path(exp) / "best_model.pth" if Path(exp).is_dir() else Path(exp)
    model = load_model(model_path)
    label = query_of(model, query, remove, query_audio, query_seconds)
    separator = Separator(model, window_seconds, label)
    folders = ([f"spk{i}" for i in range(1, separator.n_src + 1)] if label is None
               else [f"like_{Path(query_audio).stem}"] if query_audio
               else [query if query else f"without_{remove}"])
    out = Path(out)
    start = time.time()
    for number, (key, path) in enumerate(items, 1):
        audio, sr = read_mono(path)
        estimates = separator(audio, sr)
        if remove:
            estimates = audio[None] - estimates
        name = key if Path(key).suffix else f"{key}.wav"
        for folder, est in zip(folders, estimates):
            io_utils.write_wav(out / folder / name, est.numpy(), sr)
        print(f"  {number}/{len(items)} {key}: {len(audio) / sr:.1f} s at {sr} Hz -> {len(estimates)} sources",
              flush=True)
    where = folders[0] if label is not None else "spk*"
    print(f"separate: wrote {len(items)} x {separator.n_src} files under {out}/{where}/ in {time.time() - start:.1f} s")


@exit_on_recipe_error
def main(argv=None):
    parser = separate_parser()
    args = parser.parse_args(argv)
    separate(args.exp, args.out, inputs_from(args), args.window_seconds, args.query, args.remove, args.query_audio,
             args.query_seconds)


if __name__ == "__main__":
    main()

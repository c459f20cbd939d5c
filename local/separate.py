"""Separate your own recordings (or an scp list of mixtures) with a trained experiment.

    utils/separate.sh --exp exp/<tag> --out DIR (--scp mix.scp | file.wav ...) [--window_seconds 8]

Writes DIR/spk1/<key>, DIR/spk2/<key>, ... (one wav per estimated source, `<key>` being the scp key or
the file name; `.wav` is appended when the key has no extension), at each input's own sample rate,
as the earlier DPCL-DPRNN tools did. Inputs may have any sample rate (resampled to the model's and
back with torchaudio), any number of channels (downmixed), any length: files longer than the window
are processed in half-overlapping windows with Asteroid's `LambdaOverlapAdd`, which also keeps the
source order consistent from window to window.
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
    """A model plus the resampling and windowing around it: any mono signal at any rate -> [n_src, T]."""

    def __init__(self, model, window_seconds):
        self.model, self.n_src = model.eval(), n_sources(model)
        self.sample_rate = int(model.sample_rate)
        self.window = int(window_seconds * self.sample_rate)
        self.ola = LambdaOverlapAdd(model, self.n_src, self.window, self.window // 2, window="hann",
                                    reorder_chunks=True)

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


def separate(exp, out, items, window_seconds=8.0):
    model_path = Path(exp) / "best_model.pth" if Path(exp).is_dir() else Path(exp)
    separator = Separator(load_model(model_path), window_seconds)
    out = Path(out)
    start = time.time()
    for number, (key, path) in enumerate(items, 1):
        audio, sr = read_mono(path)
        estimates = separator(audio, sr)
        name = key if Path(key).suffix else f"{key}.wav"
        for i, est in enumerate(estimates, 1):
            io_utils.write_wav(out / f"spk{i}" / name, est.numpy(), sr)
        print(f"  {number}/{len(items)} {key}: {len(audio) / sr:.1f} s at {sr} Hz -> {len(estimates)} sources",
              flush=True)
    print(f"separate: wrote {len(items)} x {separator.n_src} files under {out}/spk*/ in {time.time() - start:.1f} s")


@exit_on_recipe_error
def main(argv=None):
    parser = separate_parser()
    args = parser.parse_args(argv)
    separate(args.exp, args.out, inputs_from(args), args.window_seconds)


if __name__ == "__main__":
    main()

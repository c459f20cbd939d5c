"""Reading one segment of a source file as the models hear it: mono, at the mixture's rate.

One function for the loader (`ViewDataset`) and stage 1 (levels, silence and overlap are measured on exactly
what the loader returns), with the source cache behind it, so that what is measured is what is trained on.
"""
import soundfile as sf
import torch
import torchaudio

from local.common.errors import RecipeError


def read_segment(path, start, end, sample_rate, resample=True, where=None, cache=None):
    """Samples [start, end) of `path` (in the file's own samples), downmixed to mono and resampled to
    `sample_rate`, as a float32 tensor; a RecipeError naming `where` (a CSV row) and the file otherwise.
    With a `SourceCache` (local/data/source_cache.py), a file that needs decoding or resampling is read from
    its cached copy at `sample_rate`."""
    where = f"{where}: " if where else ""
    if cache is not None and resample:
        segment = cache.segment(path, start, end, where)
        if segment is not None:
            return torch.from_numpy(segment)
    try:
        with sf.SoundFile(str(path)) as f:
            file_sr, frames = f.samplerate, f.frames
            if not 0 <= start < end <= frames:
                raise RecipeError(
                    f"{where}segment [{start}, {end}) lies outside {path} ({frames} samples). "
                    f"The file changed since stage 1: re-run stage 1 (delete the view folder)."
                )
            f.seek(start)
            audio = f.read(end - start, dtype="float32", always_2d=True)
    except RecipeError:
        raise
    except Exception as err:
        raise RecipeError(f"{where}cannot read {path}: {err}") from None
    audio = torch.from_numpy(audio.mean(axis=1))
    if file_sr != sample_rate:
        if not resample:
            raise RecipeError(f"{where}{path} is at {file_sr} Hz, the views at {sample_rate} Hz")
        audio = torchaudio.functional.resample(audio, file_sr, sample_rate)
    return audio

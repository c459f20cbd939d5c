"""Atomic file writing: a stage either leaves a complete file or none, never a half-written one.

Every output goes to a temporary file in the same directory and is renamed into place
(`os.replace` is atomic on POSIX), so an interrupted stage can simply be run again.
"""
import contextlib
import json
import os
import tempfile
from pathlib import Path

import yaml


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path next to `path`; on success rename it to `path`, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path, text):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_csv(df, path):
    """Write a pandas DataFrame as CSV, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_json(obj, path):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_yaml(obj, path):
    write_text(path, yaml.safe_dump(obj, sort_keys=False, default_flow_style=None))


def write_wav(path, samples, sample_rate, subtype="FLOAT"):
    """Write a wav atomically; float by default so that mixtures louder than 0 dBFS are not clipped."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(str(tmp), samples, sample_rate, subtype=subtype, format="WAV")

"""Audio decoding without ``datasets.Audio`` (which needs torchcodec and FFmpeg): soundfile, then
``scipy.signal.resample_poly``. One loader for the embedded spoken-digits task and the recipes."""

from __future__ import annotations

import io
import math
import os

import numpy as np

__all__ = ["SAMPLING_RATE", "audio_num_samples", "load_audio", "open_media"]

SAMPLING_RATE = 16_000


def open_media(value):
    """A file path or a file object for a media value: a path (``str`` or ``os.PathLike``), or a
    ``{'bytes', 'path'}`` dict as ``datasets`` stores undecoded audio and images."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return io.BytesIO(value["bytes"])
        value = value.get("path")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"cannot read media from {type(value).__name__} value {str(value)[:80]!r}")
    return value


def _decoded(value) -> bool:
    return isinstance(value, dict) and value.get("array") is not None


def audio_num_samples(value, sampling_rate: int = SAMPLING_RATE) -> int:
    """Length in samples at ``sampling_rate``, from the file header only (or a decoded ``array``)."""
    import soundfile as sf

    if _decoded(value):
        return int(round(len(value["array"]) * sampling_rate / value["sampling_rate"]))
    info = sf.info(open_media(value))
    return int(round(info.frames * sampling_rate / info.samplerate))


def load_audio(value, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Mono float32 audio at ``sampling_rate``, from a path, a ``{'bytes', 'path'}`` dict or an
    already decoded ``{'array', 'sampling_rate'}`` dict: channels averaged, resampled with
    ``resample_poly`` when the rate differs."""
    import soundfile as sf
    from scipy.signal import resample_poly

    if _decoded(value):
        audio, rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    else:
        audio, rate = sf.read(open_media(value), dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
    if rate != sampling_rate:
        g = math.gcd(rate, sampling_rate)
        audio = resample_poly(audio, sampling_rate // g, rate // g).astype(np.float32)
    return audio

"""Audio in: a clip (a file path, WAV/FLAC/OGG bytes, their base64, or samples with their sample rate) -> mono
float samples at the model's rate -> log-mel frames (librosa). The speech recipe and the served model both go
through `clip_frames`, so training and serving compute features the same way; the feature settings (`spec`) travel
in prepared/meta.json and so inside every registered model."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path

import numpy as np

SILENT = 1e-4          # a clip whose peak is below this (-80 dBFS) is silence: an empty transcript
RAW = (".raw", ".pcm")  # headerless 16-bit mono PCM at the model's rate (as CMU Sphinx's test data ships)


class AudioError(ValueError):
    """A clip that cannot be read or is over a limit; the message says what is wrong and what to do."""


def _too_long(name: str, seconds: float, limit: float) -> AudioError:
    return AudioError(f"{name} lasts {seconds:.1f} s; this model transcribes at most {limit:g} s per clip "
                      "(serve.max_audio_seconds when it was registered): split it into shorter clips")


def read(source: object, sample_rate: int | None = None, max_seconds: float | None = None,
         raw_rate: int = 16000) -> tuple[np.ndarray, int]:
    """(samples (N,) float32 in [-1, 1] for PCM, mono, the file's rate) from a path, bytes, base64 text, or an
    array of samples with `sample_rate`. A clip longer than `max_seconds` is refused from its header, before its
    samples are read."""
    import soundfile as sf

    if isinstance(source, list | tuple | np.ndarray) and not isinstance(source, bytes):
        return _samples(source, sample_rate, max_seconds)
    name, handle = _open(source)
    kwargs = {}
    if isinstance(handle, Path) and handle.suffix.lower() in RAW:
        kwargs = {"samplerate": raw_rate, "channels": 1, "subtype": "PCM_16", "format": "RAW", "endian": "LITTLE"}
    opened = lambda: handle if isinstance(handle, Path) else io.BytesIO(handle)  # noqa: E731 (read twice)
    try:
        if not kwargs and max_seconds and (seconds := sf.info(opened()).duration) > max_seconds:  # the header only
            raise _too_long(name, seconds, max_seconds)
        data, rate = sf.read(opened(), dtype="float32", always_2d=True, **kwargs)
    except sf.LibsndfileError as e:
        raise AudioError(f"{name} is not a readable audio file ({e.error_string}); give a WAV, FLAC or OGG file "
                         f"(or 16-bit {raw_rate} Hz PCM as {'/'.join(RAW)})") from None
    except (RuntimeError, TypeError) as e:
        raise AudioError(f"{name} is not a readable audio file ({e}); give a WAV, FLAC or OGG file") from None
    if max_seconds and len(data) > max_seconds * rate:  # headerless PCM: known once read
        raise _too_long(name, len(data) / rate, max_seconds)
    return data.mean(axis=1), int(rate)  # mixed down to mono


def _open(source: object) -> tuple[str, Path | bytes]:
    """What to call the clip in messages, and a path or the file's bytes."""
    if isinstance(source, bytes | bytearray):
        return "the audio bytes", bytes(source)
    if isinstance(source, Path) or (isinstance(source, str) and len(source) < 4096 and "\n" not in source
                                    and (Path(source).suffix or Path(source).exists())):
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"audio file not found: {path}")
        return str(path), path
    if isinstance(source, str):
        try:
            return "the base64 audio", base64.b64decode(source, validate=True)
        except (binascii.Error, ValueError):
            raise AudioError(f"{source[:40]!r} is neither an audio file's path nor base64 audio bytes") from None
    raise AudioError(f"audio must be a file path, base64 text, bytes or an array of samples, not "
                     f"{type(source).__name__}")


def _samples(values: object, sample_rate: int | None, max_seconds: float | None) -> tuple[np.ndarray, int]:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise AudioError(f"an array of samples needs its sample rate (sample_rate={sample_rate!r}): send a "
                         "positive integer in Hz, e.g. 16000")
    try:
        data = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError):
        raise AudioError("audio samples must be numbers (a list, or one list per channel)") from None
    if data.ndim == 2:  # (channels, N) or (N, channels): the shorter side is the channels
        data = data.mean(axis=0 if data.shape[0] < data.shape[1] else 1)
    if data.ndim != 1:
        raise AudioError(f"audio samples must be one list (or one per channel), not {data.ndim}-dimensional")
    if not np.isfinite(data).all():
        raise AudioError("audio samples must be finite numbers (the array holds NaN or inf)")
    if max_seconds and len(data) > max_seconds * sample_rate:
        raise _too_long("the array of samples", len(data) / sample_rate, max_seconds)
    return data, int(sample_rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Samples at `target` Hz (soxr's high-quality resampler); unchanged when the rates agree."""
    if rate == target or not len(samples):
        return samples.astype(np.float32)
    import soxr

    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32)


def log_mel(samples: np.ndarray, spec: dict) -> np.ndarray:
    """(T, n_mels) float32 log-mel energies in dB below the clip's loudest bin (0 .. -top_db), one frame every
    hop_ms: a clip's loudness (gain) does not change them. No samples: no frames."""
    import librosa

    sr, n_mels = spec["sample_rate"], spec["n_mels"]
    if not len(samples):
        return np.zeros((0, n_mels), np.float32)
    win, hop = round(sr * spec["win_ms"] / 1000), round(sr * spec["hop_ms"] / 1000)
    power = librosa.feature.melspectrogram(y=samples.astype(np.float32), sr=sr, n_fft=win, hop_length=hop,
                                           win_length=win, n_mels=n_mels, fmin=spec["fmin"], fmax=spec["fmax"],
                                           power=2.0)                                  # (n_mels, T)
    db = librosa.power_to_db(power, ref=np.max, top_db=spec["top_db"])
    return db.T.astype(np.float32)


def clip_frames(source: object, spec: dict, sample_rate: int | None = None, max_seconds: float | None = None,
                name: str = "the clip") -> np.ndarray:
    """A clip -> its log-mel frames (T, n_mels) at spec's rate: mixed down, resampled, with a warning for what may
    cost accuracy (a rate below the model's, clipping). A silent or empty clip gives no frames (an empty
    transcript)."""
    samples, rate = read(source, sample_rate, max_seconds, raw_rate=spec["sample_rate"])
    target = spec["sample_rate"]
    if rate < target:
        warnings.warn(f"{name}: {rate} Hz audio holds nothing above {rate // 2} Hz; the model was trained on "
                      f"{target} Hz (it is upsampled): expect more errors", stacklevel=2)
    peak = float(np.abs(samples).max()) if len(samples) else 0.0
    if peak < SILENT:
        return np.zeros((0, spec["n_mels"]), np.float32)
    # clipped: many samples pinned at the peak, near full scale (a float file louder than 1.0 is not clipped)
    if peak >= 0.99 and (clipped := float((np.abs(samples) >= 0.999 * peak).mean())) > 0.001:
        warnings.warn(f"{name}: {clipped:.1%} of the samples are at full scale (clipped); the transcript may suffer",
                      stacklevel=2)
    return log_mel(resample(samples, rate, target), spec)


def wav_base64(samples: np.ndarray, rate: int) -> str:
    """Samples as a 16-bit WAV file, base64-encoded (a request's `audio` value)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, np.float32), rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode()

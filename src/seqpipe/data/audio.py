"""Audio in: a clip -> mono float samples at the model's rate -> log-mel frames (librosa). A clip is a local file
(`open_file`: the user's or a recipe's path) or what a request holds (`open_request`: WAV/FLAC/OGG bytes, their
base64, or samples with their sample rate; never a path). Either way its duration is known before its samples are
read, so a clip over the limit costs nothing. The speech recipe and the served model both go
through `clip_frames`, so training and serving compute features the same way; the feature settings (`spec`) travel
in prepared/meta.json and so inside every registered model."""

from __future__ import annotations

import base64
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SILENT = 1e-4          # a clip whose peak is below this (-80 dBFS) is silence: an empty transcript
RAW = (".raw", ".pcm")  # headerless 16-bit mono PCM at the model's rate (as CMU Sphinx's test data ships)


class AudioError(ValueError):
    """A clip that cannot be read or is over a limit; the message says what is wrong and what to do."""


def _too_long(name: str, seconds: float, limit: float) -> AudioError:
    return AudioError(f"{name} lasts {seconds:.1f} s; this model transcribes at most {limit:g} s per clip "
                      "(serve.max_audio_seconds when it was registered): split it into shorter clips")


# The one answer for a request value that is not audio. It never depends on the file system: a served model does
# not open a path a client names, so it cannot tell a client whether a path exists (docs/serving.md).
NOT_AUDIO = ("the audio is neither base64 audio bytes nor an array of samples: send a WAV, FLAC or OGG file as "
             "base64 text, or the samples as a list of numbers with a sample_rate column; a served model never "
             "opens a file path (`seqpipe predict --audio FILE` reads a file for you)")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# How audio files begin (WAV, RF64, FLAC, OGG, AIFF, CAF, AU, MP3 with a tag): base64 text whose bytes begin
# otherwise is not audio, whatever else it is (a path such as /dev/urandom is valid base64).
MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"caff", b".snd", b"ID3")
_DATA_URL = re.compile(r"data:audio/[\w.+-]+;base64,", re.IGNORECASE)


@dataclass
class Clip:
    """An opened clip whose duration is known (from its header, its size or its sample count) before any sample is
    read: `load()` reads (samples (N,) float32, mono, rate)."""
    name: str
    seconds: float
    load: Callable[[], tuple[np.ndarray, int]]

    def check(self, max_seconds: float | None) -> Clip:
        if max_seconds and self.seconds > max_seconds:
            raise _too_long(self.name, self.seconds, max_seconds)
        return self


def open_file(path: Path, raw_rate: int = 16000) -> Clip:
    """A local audio file named by the user or a recipe (never by a request): WAV, FLAC, OGG, or headerless 16-bit
    mono PCM at `raw_rate` (.raw, .pcm), whose duration comes from its size."""
    import soundfile as sf  # lazy, as every audio library here: only speech models read audio (librosa: ~1 s)

    path = Path(path).expanduser()
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    if path.suffix.lower() in RAW:
        def load_raw() -> tuple[np.ndarray, int]:
            return np.fromfile(path, dtype="<i2").astype(np.float32) / 32768, raw_rate

        return Clip(str(path), path.stat().st_size / 2 / raw_rate, load_raw)
    try:
        seconds = sf.info(str(path)).duration  # the header only
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path} is not a readable audio file ({_reason(e)}); give a WAV, FLAC or OGG file (or "
                         f"16-bit {raw_rate} Hz PCM as {'/'.join(RAW)})") from None
    return Clip(str(path), seconds, lambda: _read(path, str(path)))


def open_request(value: object, sample_rate: object = None, name: str = "the clip",
                 max_bytes: int | None = None) -> Clip:
    """A clip as a request holds it: audio file bytes, their base64 text (told from anything else by its content),
    or an array of samples with its `sample_rate`. Sizes are checked before anything is decoded (`max_bytes`: the
    file's bytes); a path is never opened."""
    if isinstance(value, list | tuple | np.ndarray) and not isinstance(value, bytes):
        return _samples(value, sample_rate, name)
    if isinstance(value, str):
        value = _base64(value, name, max_bytes)
        what = "the base64 audio"
    elif isinstance(value, bytes | bytearray):
        what = "the audio bytes"
    else:
        raise AudioError(f"audio must be base64 text of a WAV, FLAC or OGG file or an array of samples, not "
                         f"{type(value).__name__}")
    data = bytes(value)
    if max_bytes and len(data) > max_bytes:
        raise _too_big(name, len(data), max_bytes)
    import soundfile as sf

    try:
        seconds = sf.info(io.BytesIO(data)).duration  # the header only
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{what} is not a readable audio file ({_reason(e)}); send a WAV, FLAC or OGG file") \
            from None
    return Clip(name, seconds, lambda: _read(io.BytesIO(data), what))


def _base64(text: str, name: str, max_bytes: int | None) -> bytes:
    """The bytes of base64 text (a data: URL's prefix and line breaks allowed), its decoded size bounded first."""
    text = _DATA_URL.sub("", text.strip(), count=1)
    if any(c.isspace() for c in text):
        text = "".join(text.split())
    if not text or len(text) % 4 or not _BASE64.fullmatch(text) or not _audio_magic(base64.b64decode(text[:8])):
        raise AudioError(NOT_AUDIO)
    if max_bytes and (size := len(text) // 4 * 3) > max_bytes:
        raise _too_big(name, size, max_bytes)
    return base64.b64decode(text)


def _audio_magic(head: bytes) -> bool:
    """Whether bytes begin as an audio file does (an MPEG audio frame without a tag: 11 sync bits)."""
    return head.startswith(MAGIC) or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


def _too_big(name: str, size: int, limit: int) -> AudioError:
    return AudioError(f"{name} is {size / 1e6:.1f} MB of audio; this model takes at most {limit / 1e6:g} MB per "
                      "clip (serve.max_audio_mb when it was registered): send a shorter or compressed (FLAC, OGG) "
                      "clip")


def _reason(e: Exception) -> str:
    return e.error_string if hasattr(e, "error_string") else str(e).splitlines()[0]


def _read(source: Path | io.BytesIO, what: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{what} is not a readable audio file ({_reason(e)}); give a WAV, FLAC or OGG file") \
            from None
    return data.mean(axis=1), int(rate)  # mixed down to mono


def _samples(values: object, sample_rate: object, name: str) -> Clip:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise AudioError(f"an array of samples needs its sample rate (sample_rate={sample_rate!r}): send a "
                         "positive integer in Hz, e.g. 16000")
    # the shape from the outer lists alone, so that the duration is known before the numbers are converted
    first = values[0] if len(values) else None  # type: ignore[arg-type,index]
    nested = isinstance(first, list | tuple | np.ndarray)
    n = max(len(values), len(first)) if nested else len(values)  # type: ignore[arg-type]

    def load() -> tuple[np.ndarray, int]:
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
        return data, int(sample_rate)  # type: ignore[arg-type]

    return Clip("the array of samples" if name == "the clip" else name, n / int(sample_rate), load)


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
    """A clip -> its log-mel frames (T, n_mels) at spec's rate. `source`: a `Path` (a local file) or what a request
    holds (bytes, base64 text, samples with `sample_rate`); text is never read as a path. Errors name the file;
    warnings name the clip as `name` does, when given."""
    if isinstance(source, Path):
        clip = open_file(source, raw_rate=spec["sample_rate"])
    else:
        clip = open_request(source, sample_rate, name)
    clip.check(max_seconds)
    if name != "the clip":
        clip.name = name
    return features(clip, spec)


def features(clip: Clip, spec: dict) -> np.ndarray:
    """An opened clip's log-mel frames: mixed down, resampled, with a warning for what may cost accuracy (a rate
    below the model's, clipping). A silent or empty clip gives no frames (an empty transcript)."""
    samples, rate = clip.load()
    name, target = clip.name, spec["sample_rate"]
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

"""Speech synthesis with eSpeak NG, offline: the library and its voices come inside the pinned PyPI wheel
espeakng-loader, driven through ctypes (no espeak binary, no network). One `Synth` per process: espeak keeps one
global state, so a voice, rate and pitch are set before each utterance and the samples are collected by a callback.
`speak` synthesises many utterances reproducibly, in fresh worker processes."""

from __future__ import annotations

import ctypes
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

import espeakng_loader
import numpy as np

from seqpipe.errors import SeqpipeError

PACKAGE, VERSION = "espeakng-loader", "0.2.4"
AUDIO_OUTPUT_SYNCHRONOUS = 2    # espeak_AUDIO_OUTPUT: samples to the callback, espeak_Synth returns when done
CHARS_AUTO = 0                  # espeak_Synth flags: text encoding guessed (UTF-8), no markup
RATE, PITCH = 1, 3              # espeak_PARAMETER: words per minute (80-450), base pitch (0-100)
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def check_version(pinned: str = VERSION) -> None:
    """Refuse another release than the pinned one: its voices (and so the data) may differ."""
    try:
        found = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        raise SeqpipeError(f"{PACKAGE} is not installed; the speech recipe synthesises its audio with it: "
                           f"pip install {PACKAGE}=={pinned}") from None
    if found != pinned:
        raise SeqpipeError(f"{PACKAGE} {found} is installed but the recipe pins {pinned} (another release may ship "
                           f"other voices): pip install {PACKAGE}=={pinned}")


class Synth:
    """Text -> 16-bit samples at `self.rate` Hz (22,050) in a given voice ('en-us', 'en-gb-x-rp+f2', 'en+klatt3')."""

    _lib = None  # espeak's state is process-wide: initialised once

    def __init__(self) -> None:
        if Synth._lib is None:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                         ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                         espeakng_loader.get_data_path().encode(), 0)
            if rate <= 0:
                raise SeqpipeError(f"eSpeak NG did not start (espeak_Initialize returned {rate}); reinstall "
                                   f"{PACKAGE}=={VERSION}")
            Synth._lib, Synth._rate = lib, rate
        self.lib, self.rate = Synth._lib, Synth._rate
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, events):  # noqa: ANN001, ANN202 (a C callback)
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0  # 0: go on synthesising

        self._callback = _CALLBACK(collect)  # kept on self: a collected callback would crash espeak
        self.lib.espeak_SetSynthCallback(self._callback)

    def say(self, text: str, voice: str, rate: int = 175, pitch: int = 50) -> np.ndarray:
        """int16 samples of `text` spoken in `voice` at `rate` words per minute and base `pitch` (0-100). espeak
        carries state from one utterance to the next (the same text can come out a few samples longer after
        another), so only the same sequence of calls in a fresh process gives the same samples: see `speak`."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SeqpipeError(f"eSpeak NG has no voice {voice!r}; voices look like en-us, en-gb-x-rp+f2, en+klatt3")
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(1))  # breathy voices (+f2, ...) add noise from espeak's generator
        self.lib.espeak_SetParameter(RATE, int(rate), 0)
        self.lib.espeak_SetParameter(PITCH, int(pitch), 0)
        self._chunks = []
        data = text.encode()
        if self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, CHARS_AUTO, None, None) != 0:
            raise SeqpipeError(f"eSpeak NG could not synthesise {text!r} in voice {voice!r}")
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def speak(requests: list[tuple[str, str, int, int]], chunk: int = 500, workers: int = 2,
          progress: object = None) -> tuple[list[np.ndarray], int]:
    """Each (text, voice, rate, pitch) spoken, and the sample rate. Every `chunk` requests run in a fresh Python
    process (`python -m seqpipe.recipes.espeak`: espeak's state carries over between utterances and survives
    re-initialisation), `workers` at a time, so the same requests give the same samples on every run; `progress`
    (a tqdm bar) is advanced per chunk."""
    def run(part: list) -> tuple[list[np.ndarray], int]:
        done = subprocess.run([sys.executable, "-m", "seqpipe.recipes.espeak"], input=pickle.dumps(part),
                              capture_output=True, check=False)
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            raise SeqpipeError(message[-1] if message else f"eSpeak NG stopped with exit status {done.returncode}")
        result = pickle.loads(done.stdout)
        if progress is not None:
            progress.update(len(part))  # type: ignore[attr-defined]
        return result

    chunks = [requests[i:i + chunk] for i in range(0, len(requests), chunk)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(run, chunks))
    return [wave for part, _ in results for wave in part], results[0][1] if results else 0


if __name__ == "__main__":  # one chunk of `speak`: pickled requests in, pickled (samples, rate) out
    try:
        synth = Synth()
        sys.stdout.buffer.write(pickle.dumps(([synth.say(*r) for r in pickle.load(sys.stdin.buffer)], synth.rate)))
    except SeqpipeError as e:
        sys.exit(str(e))

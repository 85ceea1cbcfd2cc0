"""Recipe `speech`: spoken digit strings, playing cards and robot commands, synthesised offline with eSpeak NG
(seqpipe.recipes.espeak) in many voices, rates and pitches, with small speed and gain changes and background noise at
several SNRs, then turned into log-mel frames (seqpipe.data.audio). The sentences follow the grammars of CMU Sphinx's
test recordings (TIDIGITS-like digit strings, the `cards` and `goforward` grammars), so a model trained here can
also be scored on those real recordings (`real_speech`, evaluation only). Whole voices are held out for the test
split: its score is on speakers the model never heard. Every test sentence is heard in every noise condition
(`source`: clean, snr20, ...), so the conditions are compared on the same sentences."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seqpipe.data.audio import log_mel, resample
from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document
from seqpipe.recipes.espeak import check_version, speak

DIGITS = ["zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
RANKS = ["ace", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "jack", "queen", "king",
         "lady"]
SUITS = ["clubs", "hearts", "diamonds", "spades"]
DISTANCES = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
KINDS = ("digits", "cards", "commands")


def sentence(kind: str, rng: np.random.Generator) -> str:
    """A random sentence of one grammar: 1-7 digits; 1-3 cards (`cards.gram`); a move (`goforward.gram`)."""
    pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
    if kind == "digits":
        return " ".join(pick(DIGITS) for _ in range(int(rng.integers(1, 8))))
    if kind == "cards":
        card = lambda: f"{pick(RANKS)} {'of ' if rng.random() < 0.9 else ''}{pick(SUITS)}"  # noqa: E731
        shape = int(rng.integers(5))
        return [card(), f"{card()} {card()}", f"{card()} {card()} {card()}", f"{pick(RANKS)} {card()}",
                f"{pick(RANKS)} {pick(RANKS)}"][shape]
    if kind == "commands":
        unit = ["", " meter", " meters"][int(rng.integers(3))]
        return f"go {pick(['forward', 'backward'])} {pick(DISTANCES)}{unit}"
    raise SeqpipeError(f"recipe.fetch.kinds has {kind!r}; choose from: {', '.join(KINDS)}")


def noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """n samples of white, pink (1/f) or brown (1/f^2) noise, unit power."""
    white = rng.standard_normal(n)
    if colour != "white":
        spectrum = np.fft.rfft(white)
        f = np.maximum(np.arange(len(spectrum)), 1.0)
        spectrum /= f ** (0.5 if colour == "pink" else 1.0)
        spectrum[0] = 0  # no DC: its power would count as noise but be inaudible
        white = np.fft.irfft(spectrum, n)
    return (white / (np.sqrt((white ** 2).mean()) + 1e-12)).astype(np.float32)


def voices(accents: list[str], variants: list[str]) -> list[str]:
    """Every accent with every variant ("" is the accent's own voice): en-us, en-us+f2, ..."""
    return [f"{a}+{v}" if v else a for a in accents for v in variants]


def utterance(wav: np.ndarray, synth_rate: int, rng: np.random.Generator, aug: dict, rate: int) -> np.ndarray:
    """eSpeak's samples sped up or slowed, their gain changed, with silence around, at `rate` Hz (float32)."""
    speed = rng.uniform(*aug["speed"])  # played faster or slower: pitch and tempo change together
    samples = resample(wav.astype(np.float32) / 32768.0, round(synth_rate * speed), rate)
    pad = [np.zeros(int(rng.uniform(0, aug["pad_s"]) * rate), np.float32) for _ in range(2)]
    return np.concatenate([pad[0], samples, pad[1]]) * rng.uniform(*aug["gain"])


def mix(speech: np.ndarray, snr: float | None, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Speech with noise at `snr` dB (its power over the speech's own, measured where it is not silent)."""
    if snr is None:
        return speech
    active = speech[np.abs(speech) > 1e-4]
    power = float((active ** 2).mean()) if len(active) else 1e-8
    return speech + noise(len(speech), colour, rng) * np.sqrt(power / 10 ** (snr / 10))


def condition(snr: float | None) -> str:
    return "clean" if snr is None else f"snr{snr:g}"


def fetch(audio: dict, train_voices: dict, test_voices: dict, kinds: list[str], train_size: int, test_size: int,
          snrs: list, colours: list[str], augment: dict, seed: int, version: str, workers: int = 2) -> list[Document]:
    """`train_size` utterances in the train voices (a random noise condition each) and `test_size` sentences in the
    held-out voices, each in every condition of `snrs` (null: clean); rows carry frames (T, n_mels), the
    transcript, the split, the voice (`group`: val takes whole voices) and the condition (`source`). Each
    utterance draws from its own generator (seed, split, index), so the rows do not depend on the order of work."""
    check_version(version)
    train, test = voices(**train_voices), voices(**test_voices)
    if overlap := sorted(set(train) & set(test)):
        raise SeqpipeError(f"recipe.fetch: voices {overlap[:3]} are in both train_voices and test_voices; the test "
                           "split must hold out whole voices")
    plan = []  # (split, index, generator, text, voice): what is said, and by whom
    for s, (split, n, pool) in enumerate((("train", train_size, train), ("test", test_size, test))):
        for i in range(n):
            rng = np.random.default_rng([seed, s, i])
            plan.append((split, i, rng, sentence(kinds[i % len(kinds)], rng), pool[int(rng.integers(len(pool)))]))
    requests = [(text, voice, int(rng.integers(*augment["wpm"])), int(rng.integers(*augment["pitch"])))
                for _, _, rng, text, voice in plan]
    with tqdm(total=len(plan), desc="synthesise", unit="utt", file=sys.stderr, mininterval=1.0) as bar:
        waves, synth_rate = speak(requests, workers=workers, progress=bar)
    docs, rate = [], audio["sample_rate"]
    for (split, i, rng, text, voice), wav in zip(tqdm(plan, desc="features", unit="utt", file=sys.stderr,
                                                      mininterval=1.0), waves):
        speech = utterance(wav, synth_rate, rng, augment, rate)
        colour = colours[int(rng.integers(len(colours)))]
        for snr in ([snrs[int(rng.integers(len(snrs)))]] if split == "train" else snrs):
            frames = log_mel(mix(speech, snr, colour, rng), audio)
            docs.append({"id": f"{split}-{i:05d}-{condition(snr)}", "frames": frames.round(1), "output": text,
                         "split": split, "group": voice, "source": condition(snr)})
    return docs


# --- real recordings, for evaluation only ------------------------------------------------------------------------
def real_speech(root: str, package: str = "pocketsphinx-testdata") -> list[dict]:
    """CMU Sphinx's test recordings with their transcripts (Debian package pocketsphinx-testdata): five `cards`
    clips, a TIDIGITS digit string and `goforward`; [] with a warning naming the package when it is not installed."""
    base = Path(root)
    if not (base / "cards" / "cards.transcription").is_file():
        print(f"evaluate: no real recordings at {base} (apt-get install {package}); scoring synthetic speech only",
              file=sys.stderr)
        return []
    clips = []
    for line in (base / "cards" / "cards.transcription").read_text().splitlines():
        words, _, name = line.replace("<s>", "").replace("</s>", "").rpartition("(")
        if name := name.strip(") "):
            clips.append({"id": f"cards/{name}", "audio": str(base / "cards" / f"{name}.wav"),
                          "output": " ".join(words.split())})
    clips.append({"id": "tidigits/dhd.2934z", "audio": str(base / "tidigits" / "dhd.2934z.raw"),
                  "output": "two nine three four zero"})
    clips.append({"id": "goforward", "audio": str(base / "goforward.raw"), "output": "go forward ten meters"})
    return [c for c in clips if Path(c["audio"]).is_file()]

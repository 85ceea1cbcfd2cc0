"""Notes on a fixed time grid: piano rolls (multi-hot frames over a pitch range), MIDI files in and out, and a
piano-roll picture. A frame is the set of MIDI pitches sounding at one grid step (`frame` quarter notes long).

MIDI is written and read here (format 0 out; format 0 or 1 in, a few dozen lines, exact on the grid): a pitch that
sounds in consecutive frames is written as one held note, as a piano roll cannot tell a held note from a repeated
one. A primer is sampled on the grid the model was trained on. music21 parses the chorales (and, in the tests, reads
back the files written here).
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from seqpipe.atomic import atomic_path
from seqpipe.errors import SeqpipeError

Notes = list[list[int]]  # one sorted list of MIDI pitches per frame
TICKS = 480              # MIDI ticks per quarter note


def to_roll(notes: Notes, low: int, high: int) -> np.ndarray:
    """Frames of pitches -> a (T, high - low + 1) multi-hot uint8 array; pitches outside [low, high] refused."""
    roll = np.zeros((len(notes), high - low + 1), dtype=np.uint8)
    for t, frame in enumerate(notes):
        for p in frame:
            if not low <= p <= high:
                raise ValueError(f"frame {t}: pitch {p} is outside the model's range {low}..{high}")
            roll[t, p - low] = 1
    return roll


def from_roll(roll: np.ndarray, low: int) -> Notes:
    """(T, F) multi-hot -> frames of MIDI pitches."""
    return [[int(i) + low for i in np.flatnonzero(frame)] for frame in np.asarray(roll)]


def fit_range(notes: Notes, low: int, high: int, policy: str = "error") -> Notes:
    """`notes` within [low, high]: unchanged when they are; else moved by octaves into the range with a warning
    (`policy="clamp"`), or refused naming the pitches and the fix (`policy="error"`)."""
    outside = sorted({p for frame in notes for p in frame if not low <= p <= high})
    if not outside:
        return notes
    if policy != "clamp":
        raise SeqpipeError(f"the primer has pitches {outside[:8]} outside the model's range {low}..{high} (MIDI "
                           "numbers); transpose the primer, or pass --out-of-range clamp (param out_of_range=clamp) "
                           "to move them by octaves into the range")

    def clamp(p: int) -> int:
        while p < low:
            p += 12
        while p > high:
            p -= 12
        return min(max(p, low), high)  # a range narrower than an octave

    warnings.warn(f"primer pitches {outside[:8]} are outside the model's range {low}..{high}: moved by octaves into "
                  "it", stacklevel=2)
    return [sorted({clamp(p) for p in frame}) for frame in notes]


def _vlq(n: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [n & 0x7F]
    while n := n >> 7:
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def midi_bytes(notes: Notes, frame: float = 1.0, bpm: float = 90.0, velocity: int = 80) -> bytes:
    """A format-0 MIDI file of the frames: each frame `frame` quarter notes long, held notes merged."""
    step = round(frame * TICKS)
    events: list[tuple[int, int, int]] = []  # (tick, 0 = off before 1 = on at the same tick, pitch)
    sounding: dict[int, int] = {}            # pitch -> the tick it started
    for t, frame_pitches in enumerate([*notes, []]):  # a last empty frame ends every note
        now = set(frame_pitches)
        for p in sorted(set(sounding) - now):
            events += [(sounding.pop(p), 1, p), (t * step, 0, p)]
        for p in sorted(now - set(sounding)):
            sounding[p] = t * step
    track = bytearray(b"\x00\xff\x51\x03" + round(60_000_000 / bpm).to_bytes(3, "big"))  # tempo
    last = 0
    for tick, on, pitch in sorted(events):
        track += _vlq(tick - last) + bytes([0x90 if on else 0x80, pitch, velocity if on else 0])
        last = tick
    track += b"\x00\xff\x2f\x00"  # end of track
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS) + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def read_midi(path: str | Path, frame: float = 1.0, limit: int | None = None) -> Notes:
    """A MIDI file's notes sampled every `frame` quarter notes (a pitch sounds in frame t when it sounds at time
    t * frame); a clear error for a file that is missing, not MIDI, has no notes, or (given the model's `limit`)
    lasts more frames than the model takes, refused from its note times before any frame is made."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SeqpipeError(f"primer MIDI file not found: {path}")
    try:  # one huge delta time in a tiny file would otherwise ask for billions of frames
        spans = midi_spans(path.read_bytes(), None if limit is None else (limit + 1e-9) * frame)
    except TooLong as e:
        end = f"{e.end:.3f}".rstrip("0").rstrip(".")
        raise SeqpipeError(f"{path} lasts at least {span_frames([(0.0, e.end, 0)], frame)} frames (a note ends after "
                           f"{end} quarter notes, {frame:g} a frame); this model takes a primer of at most {limit} "
                           "frames (serve.max_input_tokens when it was registered): give a shorter primer") from None
    except ValueError as e:
        raise SeqpipeError(f"{path} is not a readable MIDI file ({e}); give a standard MIDI file (.mid)") from None
    notes = sample_spans(spans, frame)
    if not any(notes):
        raise SeqpipeError(f"{path} has no notes: a primer needs at least one note")
    return notes


def _read_vlq(data: bytes, i: int) -> tuple[int, int]:
    n = 0
    for _ in range(4):
        b = data[i]
        i += 1
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            return n, i
    raise ValueError(f"a variable-length number longer than 4 bytes at byte {i}")


class TooLong(ValueError):
    """A MIDI file with a note that ends after the time asked for (`end`, in quarter notes)."""

    def __init__(self, end: float):
        super().__init__(f"a note ends after {end:g} quarter notes")
        self.end = end


def midi_spans(data: bytes, until: float | None = None) -> list[tuple[float, float, int]]:
    """(start, end, pitch) in quarter notes of every note of a standard MIDI file (format 0 or 1; drums on
    channel 10 left out); ValueError saying what is malformed. With `until`, the first note that ends later raises
    TooLong as soon as it is read: a long file costs no more than its first `until` quarter notes."""
    if data[:4] != b"MThd" or len(data) < 14:
        raise ValueError(f"no MIDI header (the file starts with {data[:4]!r})")
    size, _, tracks, division = struct.unpack(">IHHH", data[4:14])
    if division & 0x8000:
        raise ValueError("SMPTE time division is not supported; save the file with ticks per quarter note")
    spans, pos = [], 8 + size
    try:
        for _ in range(tracks):
            if data[pos:pos + 4] != b"MTrk":
                raise ValueError(f"a track was expected at byte {pos}")
            end = pos + 8 + struct.unpack(">I", data[pos + 4:pos + 8])[0]
            i, tick, status, sounding = pos + 8, 0, 0, {}  # (channel, pitch) -> start ticks
            while i < min(end, len(data)):
                delta, i = _read_vlq(data, i)
                tick += delta
                if data[i] & 0x80:
                    status, i = data[i], i + 1
                elif not status:
                    raise ValueError(f"a running status without a status byte at byte {i}")
                if status in (0xFF, 0xF0, 0xF7):  # meta and sysex events: skipped
                    length, i = _read_vlq(data, i + 1 if status == 0xFF else i)
                    i, status = i + length, 0
                    continue
                kind, channel = status & 0xF0, status & 0x0F
                if kind in (0xC0, 0xD0):  # program change, channel pressure: one data byte
                    i += 1
                    continue
                pitch, velocity = data[i], data[i + 1]
                i += 2
                if channel == 9:  # General MIDI drums: not pitches
                    continue
                if kind == 0x90 and velocity:
                    sounding.setdefault((channel, pitch), []).append(tick)
                elif kind in (0x80, 0x90) and sounding.get((channel, pitch)):
                    if until is not None and tick / division > until:
                        raise TooLong(tick / division)
                    spans.append((sounding[(channel, pitch)].pop(0) / division, tick / division, pitch))
            pos = end
    except IndexError:
        raise ValueError("the file ends in the middle of an event (truncated)") from None
    return spans


def sample_notes(score: object, frame: float) -> Notes:
    """A music21 stream's notes and chords sampled on the grid (see sample_spans)."""
    # no stripTies: a tied note is contiguous spans, sampled alike (and stripTies loses notes of partly tied chords)
    return sample_spans([(float(n.offset), float(n.offset + n.quarterLength), int(p.midi))
                         for n in score.flatten().notes for p in n.pitches], frame)  # type: ignore[attr-defined]


def span_frames(spans: list[tuple[float, float, int]], frame: float) -> int:
    """How many frames sample_spans makes of the spans: up to the last note's end."""
    return int(np.ceil(max(end for _, end, _ in spans) / frame - 1e-9)) if spans else 0


def sample_spans(spans: list[tuple[float, float, int]], frame: float) -> Notes:
    """(start, end, pitch) spans in quarter notes -> frames: frame t holds the pitches sounding at t * frame."""
    if not spans:
        return []
    frames = span_frames(spans, frame)
    notes: list[set[int]] = [set() for _ in range(frames)]
    for start, end, pitch in spans:
        for t in range(int(np.ceil(start / frame - 1e-9)), frames):
            if t * frame >= end - 1e-9:
                break
            notes[t].add(pitch)
    return [sorted(s) for s in notes]


def plot_roll(notes: Notes, out_png: Path, title: str = "", primer: int = 0) -> None:
    """A piano-roll picture (time across, pitch up); the first `primer` frames shaded as the given primer."""
    points = [(t, p) for t, frame in enumerate(notes) for p in frame]
    # a tenth of an inch a frame, up to 600 inches (60,000 pixels): Agg refuses images over 2**23 pixels wide
    fig = Figure(figsize=(min(max(6.0, len(notes) / 10), 600.0), 3.5))
    ax = fig.subplots()
    if points:
        t, p = zip(*points)
        ax.scatter(np.asarray(t) + 0.5, p, marker="s", s=12, color="black", linewidths=0)
    if primer:
        ax.axvspan(0, primer, color="tab:blue", alpha=0.15, label="primer")
        ax.legend(loc="upper right")
    ax.set_xlim(0, max(len(notes), 1))
    ax.set_xlabel("frame")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def check_steps(steps: int, limit: int | None = None) -> int:
    """A frame count to generate: a positive integer, within the model's limit."""
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise SeqpipeError(f"steps={steps!r}: the number of frames to generate must be a positive integer, e.g. 64")
    if limit is not None and steps > limit:
        raise SeqpipeError(f"steps={steps}: this model generates at most {limit} frames per request "
                           "(serve.max_new_tokens when it was registered)")
    return int(steps)


def frame_count(value: object) -> int:
    """The frames of a request's primer, counted before it is parsed: a JSON string's opening brackets less the
    outer one (exact for a list of lists of pitches, more for anything else), a list's length."""
    if isinstance(value, str):
        return max(value.count("[") - 1, 0)
    return len(value) if isinstance(value, list | tuple) else 0


def pitches_of(frames: Sequence[Sequence[object]]) -> Notes:
    """A request's primer (a list of frames, each a list of MIDI pitch integers) checked and sorted; a frame may
    repeat a pitch, but lists at most 128 (the MIDI pitches), counted before its pitches are read."""
    if not isinstance(frames, list | tuple):
        raise ValueError("a primer must be a list of frames, each a list of MIDI pitches (integers 0..127)")
    out = []
    for t, frame in enumerate(frames):
        if not isinstance(frame, list | tuple):
            raise ValueError(f"primer frame {t} is {type(frame).__name__}, not a list of MIDI pitches")
        if len(frame) > 128:
            raise ValueError(f"primer frame {t} lists {len(frame)} pitches; a frame holds at most 128 (each MIDI "
                             "pitch 0..127 once)")
        for p in frame:
            if isinstance(p, bool) or not isinstance(p, int | np.integer) or not 0 <= p <= 127:
                raise ValueError(f"primer frame {t}: {p!r} is not a MIDI pitch (an integer 0..127)")
        out.append(sorted({int(p) for p in frame}))
    return out

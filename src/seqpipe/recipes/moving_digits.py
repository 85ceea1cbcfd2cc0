"""Moving digits: a literal sequence of pictures. Each real 8x8 handwritten digit slides across a blank canvas.

The digits are scikit-learn's bundled copy (`sklearn.datasets.load_digits`, read from the installed package, no
download) of the test set of the UCI "Optical Recognition of Handwritten Digits" data (Alpaydin & Kaynak, 1998):
1,797 digits, 8x8 pixels, ink 0..16, scaled here to [0, 1].

Each example is `frames` pictures of canvas x canvas pixels, each flattened row by row. The digit moves in one of
four directions (left, right, up, down, chosen at random per example) by a fixed step of (canvas - 8) // (frames - 1)
pixels per frame, the largest whole step that keeps the digit fully inside the canvas for every frame (1 pixel per
frame at the defaults). Where the motion leaves slack, the start along the motion axis is random, and so is the
position across it. `label="digit"` asks for the digit ("0".."9"); `label="direction"` for the motion, which can only
be read from the order of the frames.
"""

from __future__ import annotations

import numpy as np

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document

DIGIT = 8  # side of a digit, in pixels
DIRECTIONS = ("left", "right", "up", "down")
LABELS = ("digit", "direction")


def _check(frames: int, canvas: int, label: str, copies: int) -> None:
    if frames < 2:
        raise SeqpipeError(f"recipe.fetch.moving_digits.frames={frames}: must be at least 2 (motion needs two "
                           "frames), e.g. 8")
    if canvas < DIGIT + frames - 1:
        # a smaller canvas would leave the digit still in some frames: its direction could not be learnt
        raise SeqpipeError(f"recipe.fetch.moving_digits.canvas={canvas}: must be at least {DIGIT + frames - 1} "
                           f"pixels (8 for the digit + 1 per step over {frames} frames); raise it or lower "
                           "recipe.fetch.moving_digits.frames")
    if label not in LABELS:
        raise SeqpipeError(f"recipe.fetch.moving_digits.label={label!r}: must be one of {', '.join(LABELS)}")
    if copies < 1:
        raise SeqpipeError(f"recipe.fetch.moving_digits.copies={copies}: must be at least 1 (the number of motions "
                           "per digit)")


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as (N, 8, 8) ink in [0, 1], and their classes (N,)."""
    try:  # lazy: sklearn.datasets takes 1.3 s to import; the activity recipe imports this module for its archives too
        from sklearn.datasets import load_digits
    except ImportError:
        raise SeqpipeError("recipe moving_digits needs scikit-learn (it bundles the digits): "
                           "pip install scikit-learn") from None
    data = load_digits()
    return data.images / 16.0, data.target


def paths(n: int, frames: int, canvas: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random directions (n,) as indices into DIRECTIONS, and top-left rows and columns (n, frames) of the digit."""
    free = canvas - DIGIT
    step = free // (frames - 1)
    direction = rng.integers(len(DIRECTIONS), size=n)
    start = rng.integers(free - step * (frames - 1) + 1, size=n)
    across = rng.integers(free + 1, size=n)
    t = np.arange(frames)
    forward = start[:, None] + step * t  # right or down
    backward = start[:, None] + step * (frames - 1 - t)  # left or up
    along = np.where((direction % 2 == 1)[:, None], forward, backward)
    horizontal = (direction < 2)[:, None]
    rows = np.where(horizontal, across[:, None], along)
    cols = np.where(horizontal, along, across[:, None])
    return direction, rows, cols


def render(images: np.ndarray, rows: np.ndarray, cols: np.ndarray, canvas: int) -> np.ndarray:
    """Paint each digit at its (row, col) in every frame: (n, frames, canvas * canvas)."""
    n, frames = rows.shape
    out = np.zeros((n, frames, canvas, canvas), dtype=np.float32)
    d = np.arange(DIGIT)
    out[np.arange(n)[:, None, None, None], np.arange(frames)[None, :, None, None],
        (rows[:, :, None] + d)[..., None], (cols[:, :, None] + d)[:, :, None, :]] = images[:, None]
    return out.reshape(n, frames, canvas * canvas)


def fetch(frames: int = 8, canvas: int = 16, label: str = "digit", seed: int = 0, copies: int = 1,
          test_fraction: float = 0.2) -> list[Document]:
    """Every digit `copies` times, each with its own random motion; ids are digit<index>-<copy>. A seeded
    `test_fraction` of the digit pictures is the test split, with all their copies: a picture seen in training never
    comes back in the test moving another way."""
    _check(frames, canvas, label, copies)
    if not 0 < test_fraction < 1:
        raise SeqpipeError(f"recipe.fetch.moving_digits.test_fraction={test_fraction}: must be between 0 and 1, "
                           "e.g. 0.2")
    images, classes = _load_digits()
    n = len(images)
    rng = np.random.default_rng(seed)
    test = np.zeros(n, dtype=bool)
    test[rng.permutation(n)[: round(n * test_fraction)]] = True
    images, classes, test = (np.repeat(a, copies, axis=0) for a in (images, classes, test))
    direction, rows, cols = paths(n * copies, frames, canvas, rng)
    pictures = np.round(render(images, rows, cols, canvas).astype(np.float64), 3).tolist()
    labels = [str(c) for c in classes] if label == "digit" else [DIRECTIONS[d] for d in direction]
    return [{"id": f"digit{k // copies}-{k % copies}", "frames": pictures[k], "label": labels[k],
             "split": "test" if test[k] else "train"} for k in range(n * copies)]

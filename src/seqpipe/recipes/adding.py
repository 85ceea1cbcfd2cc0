"""The adding problem (Hochreiter & Schmidhuber, 1997; Le, Jaitly & Hinton, 2015): a long-memory regression test.

Each example is `length` steps of (value, marker): values uniform in [0, 1), markers 0 except two steps marked 1, one
uniformly in the first half and one in the second half (as in Le et al., 2015). The target is the sum of the two
marked values, in [0, 2); always predicting the mean scores MSE = 1/6 ~ 0.167, the baseline a model must beat.
"""

from __future__ import annotations

import numpy as np

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document


def _check(length: int, size: int) -> None:
    if length < 2:
        raise SeqpipeError(f"recipe.fetch.length={length}: must be at least 2 steps (one marker in each half), "
                           "e.g. 100")
    if size < 3:
        raise SeqpipeError(f"recipe.fetch.size={size}: must be at least 3 examples (one each for train, val and "
                           "test), e.g. 10000")


def arrays(length: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames (size, length, 2) of (value, marker) and targets (size,)."""
    rng = np.random.default_rng(seed)
    # 4 decimals drawn directly (rounding a uniform draw could give 1.0), so the target is exactly the sum of the
    # values a model sees in the JSON
    values = rng.integers(10_000, size=(size, length)) / 10_000
    half = length // 2
    first = rng.integers(half, size=size)
    second = rng.integers(half, length, size=size)
    markers = np.zeros((size, length))
    rows = np.arange(size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return np.stack([values, markers], axis=-1), targets


def fetch(length: int = 100, size: int = 10000, seed: int = 0) -> list[Document]:
    """`size` examples of `length` steps; ids are add<index>."""
    _check(length, size)
    frames, targets = arrays(length, size, seed)
    rows = zip(frames.tolist(), targets.tolist())
    return [{"id": f"add{i}", "frames": f, "target": t} for i, (f, t) in enumerate(rows)]

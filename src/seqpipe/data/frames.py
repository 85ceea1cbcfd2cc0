"""Frames: a vector of F numbers per step, checked the same way in prepare (documents) and the served model
(requests), standardised with the train split's mean and std, and read by a Linear layer (`FrameInput`) in place of
an embedding. The input kind that owns them is seqpipe.data.inputs.Frames."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn


def frames_array(value: object, features: int | None = None) -> np.ndarray:
    """A (T, F) float32 array from a T x F nested list; ValueError saying what is wrong (ragged, not numbers, NaN or
    inf, no steps, F not `features`). A flat list of numbers is T steps of one feature."""
    try:  # the fast path: a well-formed numeric array (millions of values at prepare)
        array = np.asarray(value)
    except ValueError:  # ragged
        array = np.zeros(0)
    if array.dtype.kind in "iuf" and array.ndim in (1, 2) and array.shape[0] and np.isfinite(array).all():
        array = array.reshape(len(array), -1).astype(np.float32)  # (T, F); a flat list is T steps of one feature
        if features is not None and array.shape[1] != features:
            got = f"{array.shape[1]} feature{'s' if array.shape[1] != 1 else ''}"
            raise ValueError(f"{got} per step; this model expects {features}")
        return array
    return _explain(value.tolist() if isinstance(value, np.ndarray) else value)


def _explain(value: object) -> np.ndarray:
    """Raise the ValueError that says what is wrong with frames the fast path refused."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"frames must be a T x F list of lists of numbers, not {type(value).__name__}")
    if not value:
        raise ValueError("the series has no steps (length 0): send at least one frame")
    if all(_is_number(v) for v in value):
        value = [[v] for v in value]  # a univariate series
    if not all(isinstance(step, list | tuple) for step in value):
        raise ValueError("frames must be a T x F list of lists of numbers (one list per step)")
    widths = {len(step) for step in value}
    if len(widths) > 1:
        first = next(i for i, step in enumerate(value) if len(step) != len(value[0]))
        raise ValueError(f"ragged frames: step 0 has {len(value[0])} features but step {first} has "
                         f"{len(value[first])}; every step needs the same number")
    for t, step in enumerate(value):
        for f, v in enumerate(step):
            if not _is_number(v):
                raise ValueError(f"step {t}, feature {f}: {v!r} is not a number")
            if not math.isfinite(v):
                raise ValueError(f"step {t}, feature {f} is {v}: frames must be finite numbers (fill or drop missing "
                                 "values before training)")
    raise ValueError("frames must be a T x F list of lists of numbers")


def _is_number(v: object) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def fit_frames(train: Sequence[np.ndarray]) -> dict:
    """The frames input spec of prepared/meta.json: F and the train split's per-feature mean and std (a constant
    feature gets std 1, so it standardises to 0 instead of dividing by 0)."""
    steps = np.concatenate(train).astype(np.float64)  # (sum T, F)
    mean, std = steps.mean(0), steps.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    return {"kind": "frames", "features": int(steps.shape[1]), "mean": mean.round(8).tolist(),
            "std": std.round(8).tolist()}


def warp(x: Tensor, rng: np.random.Generator, speed: float = 0.0, scale: float = 0.0) -> Tensor:
    """One example's frames (T, F), changed at random as the train split is read (data.augment): played faster or
    slower by a factor drawn from 1 +/- `speed` (linear interpolation in time: T becomes about T / factor) and each
    feature multiplied by a gain drawn from 1 +/- `scale`; the same movement made at another pace or strength."""
    x = x.float()
    if speed and len(x) > 1:
        steps = max(2, round(len(x) / rng.uniform(1 - speed, 1 + speed)))
        x = torch.nn.functional.interpolate(x.T.unsqueeze(0), size=steps, mode="linear", align_corners=True)[0].T
    if scale:
        x = x * torch.from_numpy(rng.uniform(1 - scale, 1 + scale, size=x.shape[1]).astype(np.float32))
    return x


class FrameInput(nn.Module):
    """Float frames (B, T, F) -> (B, T, E): standardised with the train split's mean and std (buffers, so the served
    model applies the same), then projected by a Linear layer in place of an embedding."""

    def __init__(self, features: int, dim: int, mean: list[float] | None = None, std: list[float] | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean if mean is not None else [0.0] * features))
        self.register_buffer("std", torch.tensor(std if std is not None else [1.0] * features))
        self.proj = nn.Linear(features, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj((x - self.mean) / self.std)

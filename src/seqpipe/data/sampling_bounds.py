"""What a generation request may ask of sampling: a temperature and a seed within the ranges where sampling is
defined. Checked by every served model that samples (language models, piano rolls) and by `seqpipe generate`'s
arguments, with one message each; no torch here, so the command line refuses before anything heavy loads."""

from __future__ import annotations

import math
from numbers import Integral, Real

# Temperatures outside this range buy nothing (below it sampling is greedy in all but name, above it every choice
# is about equally likely) and near the ends of float32 they break it: logits / 1e-320 are inf, and -inf / 1e308 (a
# suppressed token) is NaN, so the probabilities are NaN.
TEMPERATURES = (1e-4, 1e4)
SEED_MAX = 2**63 - 1  # a seed is a signed 64-bit integer (MLflow's long; torch.Generator overflows at 2**64)


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_temperature(temperature: object, zero: str = "greedy") -> float:
    """A request's temperature: 0 (`zero` names what 0 does) or a sampling temperature within TEMPERATURES;
    ValueError naming the range otherwise."""
    low, high = TEMPERATURES
    t = math.nan
    if isinstance(temperature, Real) and not isinstance(temperature, bool):  # numpy numbers are Real too
        try:
            t = float(temperature)
        except OverflowError:  # an integer beyond any float
            t = math.inf
    if not (t == 0 or low <= t <= high):  # NaN fails both
        raise ValueError(f"temperature={_shown(temperature)} must be a number >= 0 (0 = {zero}); a sampling "
                         f"temperature is between {low:g} (all but greedy) and {high:g} (all but uniform)")
    return t


def check_seed(seed: object) -> int:
    """A request's seed: an integer from 0 to SEED_MAX, or -1 for a fresh one; ValueError naming the range otherwise."""
    if not isinstance(seed, Integral) or isinstance(seed, bool):
        raise ValueError(f"seed={_shown(seed)} must be an integer")
    if not -1 <= seed <= SEED_MAX:
        raise ValueError(f"seed={seed} must be >= 0, or -1 for a fresh seed, and at most {SEED_MAX} (2**63 - 1)")
    return int(seed)

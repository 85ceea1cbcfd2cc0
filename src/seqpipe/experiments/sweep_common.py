"""What a sweep (seqpipe.experiments.tune) and its trials (seqpipe.experiments.trial) both need: where a trial keeps
its files, what it reports the monitored metric as, how long a stopped trial may take to finish."""

from __future__ import annotations

from pathlib import Path

STOP_WAIT_S = 120  # how long a stopped trial may take to end its run (save, log) before its worker goes


def metric_name(monitor: str) -> str:
    """What a trial reports the monitored metric as (Ray reads `/` in a result key as nesting)."""
    return monitor.replace("/", "_")


def trial_dir(sweep_dir: str | Path, trial_id: str) -> Path:
    return Path(sweep_dir) / "trials" / trial_id

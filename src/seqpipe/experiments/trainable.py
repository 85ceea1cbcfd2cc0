"""The trainable Ray runs a sweep's trials with (seqpipe.experiments.trial.run_trial in Ray's function trainable), in
a module of its own so that the sweep's driver (seqpipe.experiments.tune) does not load the trial's Lightning."""

from __future__ import annotations

from functools import partial

from ray.train._internal.session import get_session
from ray.tune.trainable.function_trainable import wrap_function

from seqpipe.experiments.sweep_common import STOP_WAIT_S


def run_trial(config: dict, base: dict, sweep: dict) -> None:
    """seqpipe.experiments.trial.run_trial, imported in the trial's worker (lazy: the trial module loads Lightning,
    ~2 s on 2 cores, which the sweep's driver never needs)."""
    from seqpipe.experiments.trial import run_trial as run

    run(config, base, sweep)


def trainable(base: dict, sweep: dict) -> type:
    """Ray's function trainable for run_trial, except that stopping a trial waits for its training thread to end
    its run (Ray's own waits for nothing, so a trial stopped last would be killed mid-write, its MLflow run left
    RUNNING). This and reusing a worker rely on Ray 2.60's function-trainable session (pinned)."""
    class SeqpipeTrial(wrap_function(partial(run_trial, base=base, sweep=sweep), name="trial")):
        def cleanup(self) -> None:
            session = get_session()
            if session is not None and session.training_started:
                session.finish(timeout=STOP_WAIT_S)
            super().cleanup()

    return SeqpipeTrial

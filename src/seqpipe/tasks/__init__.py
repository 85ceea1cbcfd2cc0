"""The tasks, one module each; the stages (prepare, train, evaluate, register, the served model) call a `Task`
(seqpipe.tasks.base) and never ask which one it is. `TASKS` is the one table from a name to its class; a task's
module is imported when it is asked for (lazy: importing them all loads Lightning, ~2 s, which `seqpipe --help` and
`seqpipe compose` do without). Checking a config needs only the tasks' rules (`task_rules(name)`,
seqpipe.tasks.rules), which each task class inherits."""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from seqpipe.errors import SeqpipeError
from seqpipe.tasks.rules import RULES, TaskRules

if TYPE_CHECKING:
    from seqpipe.tasks.base import Task

TASKS = {
    "lm": "seqpipe.tasks.lm:LanguageModelling",
    "classify": "seqpipe.tasks.classify:Classify",
    "tag": "seqpipe.tasks.classify:Tag",
    "regress": "seqpipe.tasks.regress:Regress",
    "seq2seq": "seqpipe.tasks.seq2seq:Seq2SeqTask",
    "pianoroll": "seqpipe.tasks.pianoroll:PianoRoll",
    "ctc": "seqpipe.tasks.ctc:CTC",
}
NAMES = tuple(TASKS)
# The tasks whose registered text models `seqpipe generate` or `seqpipe predict --text` load without Lightning, pandas
# or MLflow (seqpipe.serving.local): a module with `COMMAND`, `build_net(meta, model)`, and `run_cli(args, model)`
# (generate) or `answer_rows(model, task, xs, unk)` (predict); the others load the MLflow pyfunc.
LEAN = {"lm": "seqpipe.tasks.lm_served", "classify": "seqpipe.tasks.classify_served",
        "tag": "seqpipe.tasks.classify_served", "regress": "seqpipe.tasks.classify_served"}


def _known(name: str) -> str:
    if name not in TASKS:
        raise SeqpipeError(f"task={name!r} is not allowed; choose one of: {', '.join(NAMES)}")
    return name


def get_task(name: str) -> Task:
    """The task called `name` (a new one: a task may keep state while it prepares), its module imported on demand."""
    return _task_class(_known(name))()


@cache
def _task_class(name: str) -> type[Task]:
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def task_rules(name: str) -> TaskRules:
    """The config rules of the task called `name` (seqpipe.tasks.rules), without importing the task's module."""
    return RULES[_known(name)]()


def task_sections() -> dict[str, TaskRules]:
    """The config sections the tasks own (seq2seq, pianoroll, ctc), each with its task's rules."""
    return {r.section: r for r in map(task_rules, NAMES) if r.section}


def trained_by() -> tuple[str, ...]:
    """The keys of the tasks' sections that change what is learnt (the train stage's params)."""
    return tuple(key for r in map(task_rules, NAMES) for key in r.trained_by)

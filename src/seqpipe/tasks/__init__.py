"""The tasks, one module each; the stages (prepare, train, evaluate, register, the served model) call a `Task`
(seqpipe.tasks.base) and never ask which one it is. `get_task(name)` is the one place that maps a name to its
module: each task is imported when asked for, so `seqpipe --help` stays fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

from seqpipe.errors import SeqpipeError

if TYPE_CHECKING:
    from seqpipe.tasks.base import Task

NAMES = ("lm", "classify", "tag", "regress", "seq2seq", "pianoroll", "ctc")


def get_task(name: str) -> Task:
    """The task called `name`, imported on demand (so `seqpipe --help` stays fast)."""
    match name:
        case "lm":
            from seqpipe.tasks.lm import LanguageModelling
            return LanguageModelling()
        case "classify":
            from seqpipe.tasks.classify import Classify
            return Classify()
        case "tag":
            from seqpipe.tasks.classify import Tag
            return Tag()
        case "regress":
            from seqpipe.tasks.regress import Regress
            return Regress()
        case "seq2seq":
            from seqpipe.tasks.seq2seq import Seq2SeqTask
            return Seq2SeqTask()
        case "pianoroll":
            from seqpipe.tasks.pianoroll import PianoRoll
            return PianoRoll()
        case "ctc":
            from seqpipe.tasks.ctc import CTC
            return CTC()
    raise SeqpipeError(f"task={name!r} is not allowed; choose one of: {', '.join(NAMES)}")

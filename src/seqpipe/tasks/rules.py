"""Each task's config rules: the prepare.inputs it reads, whether it carries state between batches, the config section
it owns with the keys of it that change what is learnt, and `check(cfg)`. Each task class (seqpipe.tasks.<name>)
inherits them from here, so they have one source; this module imports neither torch nor Lightning nor MLflow, so that
checking a config (`seqpipe compose`, `seqpipe stage fetch`, the `seqpipe tune` driver) takes a fraction of a second
instead of the ~5 s those imports take on 2 cores."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from seqpipe.errors import SeqpipeError

if TYPE_CHECKING:  # a config is checked without loading omegaconf here (~0.1 s of a lean `seqpipe predict`)
    from omegaconf import DictConfig

# seqpipe.data.inputs.KINDS's and seqpipe.models.attention.ATTENTIONS's names, repeated so that checking a config
# loads no torch (tests/test_tasks.py keeps them equal)
INPUT_KINDS = ("tokens", "frames")
ATTENTIONS = ("bahdanau", "luong")
CTC_UNITS = ("char", "word")


def check_beam_width(width: object) -> None:
    """evaluate.beam_width of the tasks that decode (seq2seq, ctc)."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise SeqpipeError(f"evaluate.beam_width={width!r} must be a positive integer (1 = greedy)")


def check_augment(cfg: DictConfig, rules: TaskRules) -> None:
    """data.augment: fractions in [0, 1), and only where the task warps frames (classify and regress on frames)."""
    augment = cfg.data.get("augment") or {}
    for key, value in augment.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise SeqpipeError(f"data.augment.{key}={value!r} must be a number in [0, 1) (0: off; 0.2: up to 20% "
                               "either way)")
    on = [key for key, value in augment.items() if value]
    if on and not (rules.warps_frames and cfg.prepare.inputs == "frames"):
        why = (f"prepare.inputs={cfg.prepare.inputs} is not frames" if rules.warps_frames else
               f"task={rules.name} does not warp its inputs (classify and regress on frames do)")
        raise SeqpipeError(f"data.augment.{on[0]}={augment[on[0]]} changes frames at random, but {why}: set "
                           f"data.augment.{on[0]}=0")


class TaskRules:
    name = ""
    inputs: tuple[str, ...] = ("tokens", "frames")  # the prepare.inputs it can read
    carries_state = False  # consecutive batches continue the same streams (stateful truncated BPTT)
    # The config section this task alone reads (closed: a key added there is refused), and the keys of it that change
    # what is learnt (the train stage's DVC params and the resume fingerprint; tests/test_dag.py checks dvc.yaml).
    section: str | None = None
    trained_by: tuple[str, ...] = ()
    # What the served model does with an input longer than prepare.max_len: "cut" reads its first max_len steps (with
    # a warning); "refuse" refuses it (prepare drops such examples, counted: half an input does not map to its whole
    # output); "read" reads every step (one answer per step). Prepare cuts training inputs unless the policy refuses.
    # A rule so that a lean served model (seqpipe.serving.local) applies it without importing the task's module.
    long_inputs: Literal["cut", "refuse", "read"] = "cut"
    # data.augment (seqpipe.data.frames.warp) applies: frames with one target per sequence (its length may change)
    warps_frames = False

    def check(self, cfg: DictConfig) -> None:
        """Config rules of this task, with messages that name the key and the fix."""
        if cfg.prepare.inputs not in self.inputs:
            raise SeqpipeError(f"prepare.inputs={cfg.prepare.inputs} does not work with task={self.name}, which reads "
                               f"{' or '.join(self.inputs)}; set prepare.inputs={self.inputs[0]}")
        if cfg.train.carry_state and not self.carries_state:
            raise SeqpipeError(f"train.carry_state=true carries hidden state across chunks of one stream (task=lm); "
                               f"task={self.name} has independent sequences: set train.carry_state=false")
        check_augment(cfg, self)


class LanguageModellingRules(TaskRules):
    name = "lm"
    inputs = ("tokens",)
    carries_state = True

    def check(self, cfg: DictConfig) -> None:
        if cfg.prepare.inputs != "tokens":
            raise SeqpipeError(f"prepare.inputs={cfg.prepare.inputs} does not work with task=lm: a language model "
                               "predicts the next token; set prepare.inputs=tokens")
        if cfg.model.bidirectional:
            raise SeqpipeError("model.bidirectional=true needs a labelled task: a language model (task=lm) reads "
                               "left to right; set model.bidirectional=false")
        check_augment(cfg, self)


class ClassifyRules(TaskRules):
    name = "classify"
    warps_frames = True


class TagRules(ClassifyRules):
    name = "tag"
    warps_frames = False  # one tag per step: a warped sequence no longer lines up with its tags
    long_inputs = "read"  # one tag per position: every position is read


class RegressRules(TaskRules):
    name = "regress"
    warps_frames = True


class Seq2SeqRules(TaskRules):
    name = "seq2seq"
    inputs = ("tokens",)
    long_inputs = "refuse"  # half an input does not map to its whole output
    section, trained_by = "seq2seq", ("seq2seq",)

    def check(self, cfg: DictConfig) -> None:
        super().check(cfg)
        s, e = cfg.seq2seq, cfg.evaluate
        if s.attention not in ATTENTIONS:
            raise SeqpipeError(f"seq2seq.attention={s.attention!r} is not allowed; choose one of: "
                               f"{', '.join(ATTENTIONS)}")
        for key, value in (("seq2seq.teacher_forcing", s.teacher_forcing),
                           ("seq2seq.teacher_forcing_end", s.teacher_forcing_end)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not 0 <= value <= 1):
                raise SeqpipeError(f"{key}={value!r} must be a probability in [0, 1] (1: always the true token)")
        check_beam_width(e.beam_width)
        if not isinstance(e.length_penalty, int | float) or e.length_penalty < 0:
            raise SeqpipeError(f"evaluate.length_penalty={e.length_penalty!r} must be a number >= 0")
        if e.max_output_len is not None and (not isinstance(e.max_output_len, int) or e.max_output_len < 1):
            raise SeqpipeError(f"evaluate.max_output_len={e.max_output_len!r} must be a positive integer, or null "
                               "(twice the longest train output)")
        check_fold(e.fold)


def check_fold(fold: object) -> None:
    """evaluate.fold of a seq2seq recipe: {suffix, remove}, the outputs scored again with the regular expression
    `remove` taken out of each token (g2p: the stress digits, as its anchors score), as test/<metric><suffix>."""
    if fold is None:
        return
    keys = set(fold) if hasattr(fold, "keys") else set()  # type: ignore[arg-type]
    if keys != {"suffix", "remove"}:
        raise SeqpipeError(f"evaluate.fold={fold!r} must be {{suffix: _name, remove: REGEX}} (g2p: "
                           "{suffix: _nostress, remove: '[012]$'}), or null")
    suffix, remove = fold["suffix"], fold["remove"]  # type: ignore[index]
    if not isinstance(suffix, str) or not re.fullmatch(r"_[a-z0-9_]+", suffix):
        raise SeqpipeError(f"evaluate.fold.suffix={suffix!r} must start with _ and hold only a-z, 0-9 and _ (it ends "
                           "the metric names, e.g. test/wer_nostress)")
    try:
        re.compile(remove)
    except (re.error, TypeError) as err:
        raise SeqpipeError(f"evaluate.fold.remove={remove!r} is not a regular expression ({err}); e.g. '[012]$' "
                           "removes a token's final stress digit") from None


class PianoRollRules(TaskRules):
    name = "pianoroll"
    inputs = ("frames",)
    section, trained_by = "pianoroll", ("pianoroll.transpose",)

    def check(self, cfg: DictConfig) -> None:
        super().check(cfg)
        if cfg.model.bidirectional:
            raise SeqpipeError("model.bidirectional=true cannot generate: a piano-roll model predicts the next frame "
                               "from the past only; set model.bidirectional=false")
        r = cfg.pianoroll
        if not 0 <= r.low <= r.high <= 127:
            raise SeqpipeError(f"pianoroll.low={r.low}, pianoroll.high={r.high}: need 0 <= low <= high <= 127 (MIDI "
                               "pitches; 21..108 is the piano)")


class CTCRules(TaskRules):
    name = "ctc"
    inputs = ("frames",)
    long_inputs = "refuse"  # the first max_len frames do not hold the whole transcript
    section, trained_by = "ctc", ("ctc.stack", "ctc.spec_augment")

    def check(self, cfg: DictConfig) -> None:
        super().check(cfg)
        c = cfg.ctc
        if isinstance(c.stack, bool) or not isinstance(c.stack, int) or c.stack < 1:
            raise SeqpipeError(f"ctc.stack={c.stack!r} must be a positive integer (1: every frame)")
        for key, value in c.spec_augment.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SeqpipeError(f"ctc.spec_augment.{key}={value!r} must be a whole number >= 0 (0: off)")
        if c.unit not in CTC_UNITS:
            raise SeqpipeError(f"ctc.unit={c.unit!r} is not allowed; choose one of: {', '.join(CTC_UNITS)}")
        check_beam_width(cfg.evaluate.beam_width)


# task name -> its rules (seqpipe.tasks.TASKS names the class that inherits them)
RULES: dict[str, type[TaskRules]] = {cls.name: cls for cls in (
    LanguageModellingRules, ClassifyRules, TagRules, RegressRules, Seq2SeqRules, PianoRollRules, CTCRules)}

"""The contracts between the stages and the tasks / input kinds: what a stage asks of them, checked on each of them
(a new task or kind that breaks one fails here, not in a pipeline run)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from seqpipe.data.inputs import KINDS, Audio, Frames, Tokens, kind_of
from seqpipe.data.request_checks import RequestError, fit_length
from seqpipe.models.attention import ATTENTIONS
from seqpipe.tasks import NAMES, TASKS, get_task, rules
from seqpipe.tasks.base import ExampleTask, Task


def test_the_table_names_every_task_and_each_loads_as_its_class():
    assert NAMES == tuple(TASKS)
    for name in NAMES:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        assert task.long_inputs in ("cut", "refuse", "read")
        assert task.command in ("predict", "generate")
        assert get_task(name) is not task  # a fresh one each time: a task may keep state while it prepares
    # the example-based tasks share ExampleTask's prepare; lm and pianoroll bring their own
    assert {n for n in NAMES if isinstance(get_task(n), ExampleTask)} == {"classify", "tag", "regress", "seq2seq",
                                                                          "ctc"}


def test_each_task_inherits_its_config_rules_from_the_light_module():
    """config validation reads seqpipe.tasks.rules alone (no torch): each task class must be its rules' subclass, and
    the names the rules repeat must be the ones the code accepts."""
    assert tuple(rules.RULES) == NAMES
    for name in NAMES:
        task = get_task(name)
        assert isinstance(task, rules.RULES[name]) and task.check.__func__ is rules.RULES[name].check
        assert (task.section, task.trained_by, task.inputs) == (rules.RULES[name].section,
                                                                rules.RULES[name].trained_by, rules.RULES[name].inputs)
    assert set(rules.INPUT_KINDS) == set(KINDS) and rules.ATTENTIONS == tuple(ATTENTIONS)


def test_checking_a_config_loads_neither_torch_nor_lightning_nor_mlflow():
    import subprocess
    import sys

    code = ("import sys; from seqpipe.config import compose, validate; "
            "[validate(compose([f'recipe={r}'])) for r in ('shakespeare', 'g2p', 'speech', 'chorales', 'imdb')]; "
            "print(sorted(m for m in ('torch', 'lightning', 'mlflow', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_served_params_of_the_decoding_tasks_take_a_beam_width():
    for name in NAMES:
        task = get_task(name)
        assert ("beam_width" in task.params) == (name in ("lm", "seq2seq", "ctc"))


@pytest.mark.parametrize(("name", "lengths"), [("classify", [3, 3]), ("tag", [3, 5])])
def test_long_inputs_are_cut_or_read_whole_as_the_task_says(name, lengths):
    xs = [torch.arange(3), torch.arange(5)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = fit_length(xs, 3, "tokens", get_task(name).long_inputs)
    assert [len(x) for x in fitted] == lengths
    assert bool(caught) == (name == "classify") and ("row 1: 5 tokens, read as its first 3" in str(caught[0].message)
                                                     if caught else True)


def test_a_task_that_refuses_long_inputs_names_the_row_and_the_limit():
    with pytest.raises(RequestError, match="row 1: 5 steps; this model reads inputs of at most 3 "):
        fit_length([torch.zeros(2, 4), torch.zeros(5, 4)], 3, "steps", get_task("ctc").long_inputs)
    assert fit_length([torch.zeros(5, 4)], None, "steps", "refuse")[0].shape == (5, 4)  # no max_len: all


def test_prepare_drops_a_long_pair_for_a_refusing_task_and_cuts_it_otherwise():
    doc = {"id": "a"}
    assert get_task("seq2seq").fit_example(doc, list("abcde"), [1, 2], 3) is None
    assert get_task("classify").fit_example(doc, list("abcde"), 1, 3) == (list("abc"), 1)
    assert get_task("tag").fit_example(doc, list("abcde"), [0, 1, 0, 1, 0], 3) == (list("abc"), [0, 1, 0])
    with pytest.raises(Exception, match="5 tokens but 2 tags"):
        get_task("tag").fit_example(doc, list("abcde"), [0, 1], 3)


def test_the_kind_of_a_model_comes_from_its_meta():
    assert isinstance(kind_of({"kind": "tokens", "vocab_size": 9}), Tokens)
    assert isinstance(kind_of(9), Tokens)  # seqpipe 0.1's weights carried a vocabulary size only
    assert type(kind_of({"kind": "frames", "features": 3})) is Frames
    audio = kind_of({"kind": "frames", "features": 40, "audio": {"sample_rate": 16000}})
    assert isinstance(audio, Audio) and audio.column("text") == "audio"
    assert kind_of({"kind": "tokens", "vocab_size": 9}).column("prompt") == "prompt"  # the task names text's column
    # the network's input layer
    assert isinstance(kind_of(9).layer(4), torch.nn.Embedding)
    layer = kind_of({"kind": "frames", "features": 3, "mean": [1.0, 1.0, 1.0], "std": [2.0, 2.0, 2.0]}).layer(4)
    assert layer(torch.ones(1, 2, 3)).shape == (1, 2, 4)

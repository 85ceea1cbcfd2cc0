from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import adding, moving_digits

# --- adding ------------------------------------------------------------------------------------------------------


def test_adding_rows_have_two_markers_one_per_half_and_the_target_is_their_sum():
    docs = adding.fetch(length=11, size=500, seed=3)
    assert len(docs) == 500 and len({d["id"] for d in docs}) == 500 and docs[0]["id"] == "add0"
    for doc in docs:
        assert len(doc["frames"]) == 11 and all(len(step) == 2 for step in doc["frames"])
        marked = [t for t, (_, marker) in enumerate(doc["frames"]) if marker == 1]
        assert all(marker in (0, 1) for _, marker in doc["frames"])
        assert len(marked) == 2 and marked[0] < 5 <= marked[1]
        assert doc["target"] == doc["frames"][marked[0]][0] + doc["frames"][marked[1]][0]
        assert all(0 <= value < 1 and round(value, 4) == value for value, _ in doc["frames"])


def test_adding_markers_cover_each_half():
    frames, _ = adding.arrays(length=10, size=2000, seed=0)
    positions = Counter(np.nonzero(frames[:, :, 1])[1].tolist())
    assert sorted(positions) == list(range(10)) and sum(positions.values()) == 4000


def test_adding_shortest_sequence_marks_both_steps():
    docs = adding.fetch(length=2, size=3)
    assert all([marker for _, marker in doc["frames"]] == [1, 1] for doc in docs)


def test_adding_is_seeded():
    assert adding.fetch(length=20, size=50, seed=1) == adding.fetch(length=20, size=50, seed=1)
    assert adding.fetch(length=20, size=50, seed=1) != adding.fetch(length=20, size=50, seed=2)


def test_adding_mean_predictor_scores_one_sixth():
    targets = np.array([doc["target"] for doc in adding.fetch(length=20, size=10000)])
    assert 0 <= targets.min() and targets.max() < 2
    assert abs(np.mean((targets - targets.mean()) ** 2) - 1 / 6) < 0.01


def test_adding_rows_survive_json():
    doc = adding.fetch(length=5, size=3)[1]
    assert json.loads(json.dumps(doc)) == doc


@pytest.mark.parametrize(("kwargs", "message"), [({"length": 1}, r"recipe\.fetch\.length=1: must be at least 2"),
                                                 ({"size": 2}, r"recipe\.fetch\.size=2: must be at least 3")])
def test_adding_rejects_bad_arguments(kwargs, message):
    with pytest.raises(SeqpipeError, match=message):
        adding.fetch(**kwargs)


# --- moving digits -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def by_direction():
    return moving_digits.fetch(frames=5, canvas=20, label="direction", seed=7, copies=2)


def _pictures(doc, canvas: int) -> np.ndarray:
    return np.array(doc["frames"]).reshape(len(doc["frames"]), canvas, canvas)


def test_moving_digits_defaults_are_every_digit_as_8_frames_of_16x16():
    docs = moving_digits.fetch()
    assert len(docs) == 1797 and docs[0]["id"] == "digit0-0" and docs[0]["label"] == "0"
    counts = Counter(doc["label"] for doc in docs)
    assert sorted(counts) == [str(d) for d in range(10)] and min(counts.values()) > 150
    frames = np.array([doc["frames"] for doc in docs])
    assert frames.shape == (1797, 8, 256) and frames.min() == 0 and frames.max() == 1


def test_moving_digits_copies_differ_in_motion(by_direction):
    assert len(by_direction) == 2 * 1797 and len({doc["id"] for doc in by_direction}) == 2 * 1797
    first, second = by_direction[0], by_direction[1]
    assert (first["id"], second["id"]) == ("digit0-0", "digit0-1") and first["frames"] != second["frames"]


def test_moving_digits_keep_all_their_ink_in_every_frame(by_direction):
    for doc in by_direction[::7]:
        ink = _pictures(doc, 20).sum(axis=(1, 2))
        assert ink[0] > 0 and np.allclose(ink, ink[0], atol=1e-6)


def test_moving_digits_move_in_the_labelled_direction(by_direction):
    expected = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
    grid = np.arange(20)
    for doc in by_direction[::5]:
        pictures = _pictures(doc, 20)
        ink = pictures.sum(axis=(1, 2))
        rows = (pictures.sum(axis=2) * grid).sum(axis=1) / ink
        cols = (pictures.sum(axis=1) * grid).sum(axis=1) / ink
        # canvas 20, 5 frames: (20 - 8) // 4 = 3 pixels a frame, exactly
        assert np.allclose(np.diff(rows), 3 * expected[doc["label"]][0], atol=1e-3)
        assert np.allclose(np.diff(cols), 3 * expected[doc["label"]][1], atol=1e-3)


def test_moving_digits_directions_are_balanced(by_direction):
    counts = Counter(doc["label"] for doc in by_direction)
    assert sorted(counts) == ["down", "left", "right", "up"]
    assert all(abs(n - len(by_direction) / 4) < 100 for n in counts.values())


def test_moving_digits_are_seeded():
    one = moving_digits.fetch(frames=2, canvas=9, seed=1)
    assert one == moving_digits.fetch(frames=2, canvas=9, seed=1)
    assert one != moving_digits.fetch(frames=2, canvas=9, seed=2)
    # the label only picks what is asked: the pictures are the same
    assert [d["frames"] for d in one] == [d["frames"] for d in moving_digits.fetch(2, 9, "direction", seed=1)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"frames": 1}, r"recipe\.fetch\.moving_digits\.frames=1: must be at least 2"),
    ({"canvas": 7}, r"recipe\.fetch\.moving_digits\.canvas=7: must be at least 15"),
    ({"frames": 4, "canvas": 10},
     r"recipe\.fetch\.moving_digits\.canvas=10: must be at least 11 .* lower recipe\.fetch\.moving_digits\.frames"),
    ({"label": "colour"}, r"recipe\.fetch\.moving_digits\.label='colour': must be one of digit, direction"),
    ({"copies": 0}, r"recipe\.fetch\.moving_digits\.copies=0: must be at least 1"),
])
def test_moving_digits_reject_bad_arguments(kwargs, message):
    with pytest.raises(SeqpipeError, match=message):
        moving_digits.fetch(**kwargs)


def test_moving_digits_keep_every_copy_of_a_picture_in_one_split():
    docs = moving_digits.fetch(frames=2, canvas=9, copies=3, test_fraction=0.25, seed=4)
    split_of: dict[str, set[str]] = {}
    for doc in docs:
        split_of.setdefault(doc["id"].split("-")[0], set()).add(doc["split"])
    assert all(len(s) == 1 for s in split_of.values())  # no picture in train and test
    assert sum(s == {"test"} for s in split_of.values()) == round(1797 * 0.25)
    with pytest.raises(SeqpipeError, match=r"recipe\.fetch\.moving_digits\.test_fraction=1: must be between 0 and 1"):
        moving_digits.fetch(test_fraction=1)

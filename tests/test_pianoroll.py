"""Piano rolls: notes <-> rolls <-> MIDI round trips, the Bernoulli loss and its metric, transposition, generation,
the chorales recipe (real music21 corpus, its cached parse) and the pipeline to a served model that writes MIDI."""

from __future__ import annotations

import base64
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqpipe.data.music import check_steps, fit_range, from_roll, midi_bytes, pitches_of, read_midi, to_roll
from seqpipe.errors import SeqpipeError
from seqpipe.recipes.chorales import cached_parse, events_notes, events_text
from seqpipe.recipes.chorales import fetch as fetch_chorales
from seqpipe.tasks.pianoroll import FrameAccuracy, PianoRoll, collate, generate, shift

TARGET = {"low": 40, "high": 80, "frame": 1.0}


def random_notes(frames: int, seed: int = 0, low: int = 40, high: int = 80) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(np.arange(low, high + 1), size=rng.integers(0, 5), replace=False).tolist())
            for _ in range(frames)]


def test_roll_round_trip_and_range() -> None:
    notes = random_notes(20)
    roll = to_roll(notes, 40, 80)
    assert roll.shape == (20, 41) and roll.sum() == sum(map(len, notes))
    assert from_roll(roll, 40) == notes
    with pytest.raises(ValueError, match="pitch 90 is outside the model's range 40..80"):
        to_roll([[60], [90]], 40, 80)


@pytest.mark.parametrize("frame", [1.0, 0.5])
def test_midi_written_here_reads_back_exactly(tmp_path: Path, frame: float) -> None:
    notes = random_notes(24, seed=3)
    notes[5] = []  # a silent frame inside
    path = tmp_path / "x.mid"
    path.write_bytes(midi_bytes(notes, frame))
    back = read_midi(path, frame)
    while not notes[-1]:  # a MIDI file ends with its last note: trailing silence is not kept
        notes.pop()
    assert back == notes


def test_midi_of_a_chorale_plays_in_music21(tmp_path: Path, chorale_cache: Path) -> None:
    import music21

    from seqpipe.data.music import sample_notes

    notes = fetch_chorales(cache_dir=str(chorale_cache), limit=12)[3]["notes"]
    path = tmp_path / "chorale.mid"
    path.write_bytes(midi_bytes(notes))
    score = music21.converter.parse(str(path), format="midi")
    assert sample_notes(score, 1.0) == notes
    assert read_midi(path) == notes


def test_bad_primers_are_named(tmp_path: Path) -> None:
    (tmp_path / "junk.mid").write_bytes(b"junk")
    with pytest.raises(SeqpipeError, match="junk.mid is not a readable MIDI file .no MIDI header"):
        read_midi(tmp_path / "junk.mid")
    (tmp_path / "cut.mid").write_bytes(midi_bytes([[60, 64]] * 4)[:-9])
    with pytest.raises(SeqpipeError, match="truncated"):
        read_midi(tmp_path / "cut.mid")
    (tmp_path / "empty.mid").write_bytes(b"")
    with pytest.raises(SeqpipeError, match="is not a readable MIDI file"):
        read_midi(tmp_path / "empty.mid")
    (tmp_path / "silent.mid").write_bytes(midi_bytes([[], []]))
    with pytest.raises(SeqpipeError, match="has no notes"):
        read_midi(tmp_path / "silent.mid")
    with pytest.raises(SeqpipeError, match="not found"):
        read_midi(tmp_path / "missing.mid")


def test_out_of_range_primer_is_refused_or_moved_by_octaves() -> None:
    notes = [[30, 60], [100]]
    with pytest.raises(SeqpipeError, match=r"pitches \[30, 100\] outside the model's range 40..80"):
        fit_range(notes, 40, 80)
    with pytest.warns(UserWarning, match="moved by octaves"):
        assert fit_range(notes, 40, 80, "clamp") == [[42, 60], [76]]
    assert fit_range([[60]], 40, 80) == [[60]]


@pytest.mark.parametrize("steps", [0, -3, 1.5, True])
def test_step_counts_must_be_positive_integers(steps: object) -> None:
    with pytest.raises(SeqpipeError, match="must be a positive integer"):
        check_steps(steps)  # type: ignore[arg-type]
    with pytest.raises(SeqpipeError, match="at most 10 frames"):
        check_steps(11, 10)


def test_request_primers_are_checked() -> None:
    assert pitches_of([[64, 60, 60], []]) == [[60, 64], []]
    assert pitches_of([[60] * 128]) == [[60]]  # a pitch may repeat, up to 128 entries a frame
    for bad, message in (([[60.5]], "not a MIDI pitch"), ([[200]], "not a MIDI pitch"), ([60], "not a list"),
                         ("x", "must be a list"), ([[], [60] * 129], "primer frame 1 lists 129 pitches; a frame holds "
                                                                     "at most 128")):
        with pytest.raises(ValueError, match=message):
            pitches_of(bad)  # type: ignore[arg-type]


def test_request_primers_are_counted_before_they_are_parsed() -> None:
    from seqpipe.data.music import frame_count

    for primer in ([[60, 64], [], [62]], [], [[]]):
        assert frame_count(json.dumps(primer)) == len(primer) == frame_count(primer)
    assert frame_count("") == frame_count("junk") == frame_count(None) == 0
    assert frame_count("[[[60]]]") == 2  # more than the frames of anything that is not a list of lists


def test_collate_feeds_the_previous_frame_from_a_silent_start() -> None:
    a, b = torch.from_numpy(to_roll(random_notes(5, 1), 40, 80)), torch.from_numpy(to_roll(random_notes(3, 2), 40, 80))
    batch = collate([(a, torch.tensor(0.0)), (b, torch.tensor(0.0))])
    assert batch["x"].shape == (2, 5, 41) and batch["lengths"].tolist() == [5, 3]
    assert batch["x"][:, 0].sum() == 0                                  # the start frame is silent
    assert torch.equal(batch["x"][0, 1:], a[:-1].float())                # then the frame before each step
    assert torch.equal(batch["y"][1, :3], b.float()) and batch["y"][1, 3:].sum() == 0


def test_transposition_moves_whole_pieces_and_keeps_them_in_range() -> None:
    roll = torch.zeros(6, 41)
    roll[:, [2, 10, 38]] = 1  # room for 2 semitones down and 2 up
    rng = np.random.default_rng(0)
    shifts = set()
    for _ in range(60):
        out = shift(roll, rng, 6)
        assert out.sum() == roll.sum()  # nothing falls off the range
        k = int(torch.nonzero(out[0]).flatten()[0]) - 2
        assert torch.equal(out, torch.roll(roll, k, dims=1))
        shifts.add(k)
    assert shifts == {-2, -1, 0, 1, 2}


def test_loss_is_the_frame_nll_and_padding_changes_nothing() -> None:
    torch.manual_seed(0)
    task = PianoRoll()
    net = task.build_net({"inputs": {"kind": "frames", "features": 41}}, {"cell": "gru", "hidden_size": 16,
                                                                             "embedding_dim": 8})
    a, b = (torch.from_numpy(to_roll(random_notes(n, n), 40, 80)) for n in (7, 4))
    zero = torch.tensor(0.0)
    alone = task.step(net, collate([(b, zero)]), None)
    both = task.step(net, collate([(a, zero), (b, zero)]), None)
    logits, _ = net(collate([(b, zero)])["x"])
    manual = F.binary_cross_entropy_with_logits(logits, b.float().unsqueeze(0), reduction="none").sum(-1).mean()
    assert torch.allclose(alone.loss, manual) and alone.weight == 4 and both.weight == 11
    loss_a = task.step(net, collate([(a, zero)]), None).loss
    assert torch.allclose(both.loss, (7 * loss_a + 4 * alone.loss) / 11, atol=1e-6)  # padded b scores as alone
    last = task.step(net, task.final_step_only(collate([(a, zero), (b, zero)])), None)
    assert last.weight == 2


def test_frame_accuracy_counts_hits_misses_and_false_alarms() -> None:
    metric = FrameAccuracy()
    metric.update(torch.tensor([[1.0, 1.0, -1.0, -1.0]]), torch.tensor([[1.0, 0.0, 1.0, 0.0]]))
    assert metric.compute().item() == pytest.approx(1 / 3)  # TP 1, FP 1, FN 1


def test_generation_keeps_the_primer_and_is_seeded() -> None:
    torch.manual_seed(0)
    net = PianoRoll().build_net({"inputs": {"kind": "frames", "features": 41}}, {"hidden_size": 16,
                                                                                 "embedding_dim": 8}).eval()
    primer = [[60, 64], [62]]
    one = generate(net, TARGET, primer, 10, 1.0, seed=5)
    assert one[:2] == primer and len(one) == 12 and all(40 <= p <= 80 for f in one for p in f)
    assert generate(net, TARGET, primer, 10, 1.0, seed=5) == one
    assert generate(net, TARGET, [], 3, 0.0) == generate(net, TARGET, [], 3, 0.0)  # greedy
    # stepping with the carried state gives what one pass over the whole piece gives
    roll = torch.from_numpy(to_roll(one, 40, 80)).float()
    x = torch.cat([torch.zeros(1, 41), roll[:-1]]).unsqueeze(0)
    full, _ = net(x)
    _, state = net(x[:, :5])
    step, _ = net(x[:, 5:6], state=state)
    assert torch.allclose(full[:, 5], step[:, 0], atol=1e-6)


def test_events_text_round_trip() -> None:
    notes = [[60, 64, 67], [], [59]]
    text = events_text(notes)
    assert text == "60 64 67 | | 59 |"
    assert events_notes(text) == notes


@pytest.fixture(scope="module")
def chorale_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("downloads")
    cached_parse(1.0, "10.5.1", str(cache), limit=12)  # the first 12 chorales of music21's corpus: a few seconds
    return cache


def test_chorales_recipe_reads_music21_and_rebuilds_a_corrupted_cache(chorale_cache: Path) -> None:
    rows = fetch_chorales(cache_dir=str(chorale_cache), limit=12)
    assert len(rows) == 12 and rows[0]["id"] == "R001-bwv269" and rows[0]["title"] == "Aus meines Herzens Grunde"
    assert rows[0]["key"] == "G major"
    in_c = fetch_chorales(cache_dir=str(chorale_cache), limit=12, to_c=True)
    assert in_c[0]["notes"][0] == [p + 5 for p in rows[0]["notes"][0]]  # G major up a fourth to C major
    assert all(36 <= p <= 90 for r in rows for f in r["notes"] for p in f)
    assert np.mean([len(f) for r in rows for f in r["notes"]]) > 3.5  # four voices, a few rests and unisons
    events = fetch_chorales(cache_dir=str(chorale_cache), limit=12, representation="events")
    assert events_notes(events[0]["text"]) == rows[0]["notes"]
    cache = next(chorale_cache.glob("*.jsonl"))
    good = cache.read_bytes()
    cache.write_bytes(good[: len(good) // 2])  # a half-written parse
    with pytest.warns(UserWarning, match="does not match its sha256"):
        again = fetch_chorales(cache_dir=str(chorale_cache), limit=12)
    assert again == rows and cache.read_bytes() == good


def test_chorales_recipe_refuses_another_music21(chorale_cache: Path) -> None:
    with pytest.raises(SeqpipeError, match=r"music21 10\.5\.1 is installed but recipe.fetch.version pins 9\.1\.0"):
        fetch_chorales(version="9.1.0", cache_dir=str(chorale_cache))
    with pytest.raises(SeqpipeError, match="representation='abc'"):
        fetch_chorales(representation="abc", cache_dir=str(chorale_cache))


@pytest.mark.slow
def test_chorales_pipeline_to_a_served_model_that_writes_midi(chorale_cache: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    import mlflow
    import music21
    import pandas as pd
    from conftest import run_pipeline

    from seqpipe.cli import main

    run = run_pipeline(tmp_path, ["recipe=chorales", f"paths.downloads={chorale_cache}", "recipe.fetch.limit=12",
                                  "model.hidden_size=32", "model.embedding_dim=16", "trainer.max_epochs=6",
                                  "optim.lr=0.02", "data.batch_size=4", "prepare.val_fraction=0.17",
                                  "prepare.test_fraction=0.17", "pianoroll.sample_steps=12"])
    history = pd.read_csv(tmp_path / "reports" / "history.csv")
    assert history["train/loss"].iloc[-1] < history["train/loss"].iloc[0]  # the Bernoulli NLL falls
    metrics = run["metrics"]
    assert 0 < metrics["test/loss"] < 60 and 0 <= metrics["test/frame_acc"] <= 1
    out = tmp_path / "reports" / "evaluate"
    for name in ("sample", "primed"):  # MIDI files that read back as the notes written, and that music21 plays
        notes = json.loads((out / f"{name}.json").read_text())
        while not notes[-1]:
            notes.pop()
        assert read_midi(out / f"{name}.mid") == notes
        assert music21.converter.parse(str(out / f"{name}.mid"), format="midi").flatten().notes
        assert (out / f"{name}.png").stat().st_size > 1000
    assert len(json.loads((out / "primed.json").read_text())) == 8 + 12

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/seqpipe-chorales@champion")
    answer = model.predict(pd.DataFrame({"primer": ["", json.dumps([[60, 64, 67], [62, 65]])]}),
                           params={"steps": 6, "seed": 1})
    notes = [json.loads(n) for n in answer["notes"]]
    assert len(notes[0]) == 6 and notes[1][:2] == [[60, 64, 67], [62, 65]] and len(notes[1]) == 8
    midi = tmp_path / "served.mid"
    midi.write_bytes(base64.b64decode(answer["midi_base64"][1]))
    assert read_midi(midi)[:8] == notes[1]
    for params, message in (({"steps": 0}, "positive integer"), ({"steps": 5000}, "at most 1024 frames"),
                            ({"temperature": -1}, "temperature")):
        with pytest.raises(Exception, match=message):
            model.predict(pd.DataFrame({"primer": [""]}), params=params)
    with pytest.raises(Exception, match="outside the model's range"):
        model.predict(pd.DataFrame({"primer": ["[[10]]"]}))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        clamped = model.predict(pd.DataFrame({"primer": ["[[10]]"]}), params={"out_of_range": "clamp", "steps": 1})
    assert json.loads(clamped["notes"][0])[0] == [22]

    capsys.readouterr()
    mid = tmp_path / "cli" / "chorale.mid"
    assert main(["generate", "--model", "models:/seqpipe-chorales@champion", "--tracking-uri", uri, "--steps", "16",
                 "--out", str(mid), "--primer", str(midi), "--seed", "3"]) == 0
    assert len(read_midi(mid)) >= 8 and mid.with_suffix(".png").is_file()
    assert read_midi(mid)[:8] == notes[1]
    (tmp_path / "bad.mid").write_bytes(b"not midi")
    assert main(["generate", "--model", "models:/seqpipe-chorales@champion", "--tracking-uri", uri, "--out",
                 str(tmp_path / "x.mid"), "--primer", str(tmp_path / "bad.mid")]) == 2
    assert "bad.mid is not a readable MIDI file" in capsys.readouterr().err
    assert not (tmp_path / "x.mid").exists()
    assert main(["generate", "--model", "models:/seqpipe-chorales@champion", "--tracking-uri", uri, "--steps", "0",
                 "--out", str(tmp_path / "y.mid")]) == 2
    assert not (tmp_path / "y.mid").exists()

"""Float-frame inputs and regression: the frame checks, standardisation, the source's own split, padding invariance,
and the adding problem and a frames classifier through the whole pipeline to a served model."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONF, models_serve, post_json, run_pipeline, working_dir

from seqpipe import cli, prepare
from seqpipe.config import compose
from seqpipe.data.batching import pad_collate
from seqpipe.data.examples import ExampleDataset
from seqpipe.data.frames import warp
from seqpipe.data.inputs import fit_frames, frames_array
from seqpipe.data.requests import InputError
from seqpipe.models.nets import SequenceClassifier
from seqpipe.tasks import get_task
from seqpipe.tracking.store import use_tracking_uri


def test_frames_array_accepts_numbers_and_refuses_the_rest():
    assert frames_array([[1, 2], [3.5, 4]]).dtype == np.float32
    assert frames_array([1, 2, 3]).shape == (3, 1)  # a univariate series
    for bad, message in (([], "length 0"), ([[1, 2], [3]], "ragged frames: step 0 has 2 features but step 1 has 1"),
                         ([[1, "x"]], "step 0, feature 1: 'x' is not a number"),
                         ([[1.0], [float("inf")]], "step 1, feature 0 is inf"), ("abc", "not str"),
                         ([[True]], "True is not a number")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            frames_array(bad)
    with pytest.raises(ValueError, match="3 features per step; this model expects 2"):
        frames_array([[1, 2, 3]], features=2)


def test_fit_frames_standardises_with_the_train_split_and_keeps_constant_features():
    spec = fit_frames([np.array([[0.0, 5.0], [2.0, 5.0]]), np.array([[4.0, 5.0]])])
    assert spec["features"] == 2 and spec["mean"] == [2.0, 5.0]
    assert spec["std"][0] == pytest.approx(np.std([0, 2, 4])) and spec["std"][1] == 1.0  # constant: no division by 0


def test_a_frames_classifier_ignores_padding():
    spec = {"kind": "frames", "features": 3, "mean": [1.0, 0.0, -1.0], "std": [2.0, 1.0, 0.5]}
    torch.manual_seed(0)
    net = SequenceClassifier(spec, 4, pooling="mean", cell="gru", embedding_dim=8, hidden_size=6,
                             bidirectional=True).eval()
    series = [torch.randn(5, 3), torch.randn(2, 3)]
    alone = [net(s.unsqueeze(0), torch.tensor([len(s)]))[0] for s in series]
    batch = pad_collate([(s, torch.tensor(0)) for s in series])
    assert batch["x"].shape == (2, 5, 3) and batch["x"].dtype == torch.float32
    together, _ = net(batch["x"], batch["lengths"])
    assert torch.allclose(together, torch.cat(alone), atol=1e-6)


def test_warp_changes_pace_and_strength_and_nothing_when_off():
    ramp = torch.stack([torch.linspace(0, 1, 100), torch.linspace(2, -2, 100)], 1)  # (100, 2)
    rng = np.random.default_rng(0)
    assert torch.equal(warp(ramp, rng), ramp)  # data.augment off: the example as it was
    stretched = [warp(ramp, rng, speed=0.2) for _ in range(40)]
    lengths = [len(x) for x in stretched]
    assert 100 / 1.2 - 1 <= min(lengths) < 95 and 105 < max(lengths) <= 100 / 0.8 + 1  # faster and slower
    for x in stretched:  # the same movement: it starts and ends where it did and stays a straight ramp
        assert torch.allclose(x[[0, -1]], ramp[[0, -1]]) and (x[1:, 0] > x[:-1, 0]).all()
    scaled = warp(ramp, rng, scale=0.1)
    gains = scaled[-1] / ramp[-1]  # one gain per feature, the same at every step
    assert torch.allclose(scaled, ramp * gains) and ((gains > 0.9) & (gains < 1.1)).all() and gains[0] != gains[1]
    one = torch.tensor([[3.0, 4.0]])
    assert len(warp(one, rng, speed=0.3)) == 1  # a single step stays one step


def test_augment_warps_the_train_batches_only():
    cfg = compose(["recipe=activity", "data.augment.speed=0.3"], config_dir=CONF)
    collate, train_collate = get_task("classify").collate(cfg)
    assert collate is None  # val and test: padded as they are
    batch = [(torch.arange(40, dtype=torch.float32).reshape(40, 1), torch.tensor(1))] * 8
    lengths = train_collate(batch)["lengths"]
    assert len(set(lengths.tolist())) > 1 and torch.equal(train_collate(batch)["y"], torch.ones(8, dtype=torch.long))
    off = compose(["recipe=activity", "data.augment.speed=0"], config_dir=CONF)
    assert get_task("classify").collate(off) == (None, None)  # nothing warped: the plain padding collate


def _frames_docs(raw: Path, rows: list[dict]) -> None:
    raw.mkdir(parents=True)
    (raw / "documents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_prepare_keeps_the_sources_split_and_stores_the_train_statistics(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"id": f"{s}{i}", "frames": (rng.normal(size=(5 + i % 3, 2)) * [1, 10] + [0, 100]).tolist(),
             "label": "ab"[i % 2], "split": s} for s in ("train", "test") for i in range(20 if s == "train" else 6)]
    _frames_docs(tmp_path / "raw", rows)
    cfg = compose(["recipe=ts_file", "recipe.fetch.train=unused", f"paths.raw={tmp_path / 'raw'}",
                   f"paths.prepared={tmp_path / 'prepared'}", f"paths.reports={tmp_path / 'reports'}",
                   "prepare.val_fraction=0.25"], config_dir=CONF)
    stats = prepare.run(cfg)
    # val: 2 of each label's 10 train rows (0.25 x 10, rounded half to even)
    assert (stats["train_examples"], stats["val_examples"], stats["test_examples"]) == (16, 4, 6)
    splits = json.loads((tmp_path / "prepared" / "splits.json").read_text())
    assert sorted(splits["test"]) == sorted(f"test{i}" for i in range(6))  # the source's test split, untouched
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    train = np.concatenate([np.array(r["frames"]) for r in rows if r["id"] in splits["train"]])
    assert meta["task"] == "classify" and meta["inputs"]["features"] == 2
    assert np.allclose(meta["inputs"]["mean"], train.mean(0)) and np.allclose(meta["inputs"]["std"], train.std(0))
    x, label = ExampleDataset(tmp_path / "prepared" / "test.npz")[0]
    first = next(r for r in rows if r["id"] == splits["test"][0])
    assert x.dtype == torch.float32 and np.allclose(x.numpy(), first["frames"], atol=1e-4)  # raw values kept
    assert meta["target"]["labels"][int(label)] == first["label"]


def test_prepare_refuses_a_row_with_nan_naming_it_and_writes_nothing(tmp_path):
    rows = [{"id": "ok", "frames": [[1.0], [2.0]], "label": "a"}] * 3 + \
        [{"id": "bad", "frames": [[1.0], [float("nan")]], "label": "b"}]
    _frames_docs(tmp_path / "raw", rows)
    cfg = compose(["recipe=ts_file", "recipe.fetch.train=unused", f"paths.raw={tmp_path / 'raw'}",
                   f"paths.prepared={tmp_path / 'prepared'}", f"paths.reports={tmp_path / 'reports'}"],
                  config_dir=CONF)
    with pytest.raises(Exception, match="example 'bad': step 1, feature 0 is nan"):
        prepare.run(cfg)
    assert not (tmp_path / "prepared").exists()


def test_regression_targets_must_be_numbers():
    task = get_task("regress")
    assert task.encode_target({"id": "a", "target": 1}, {}) == 1.0
    for bad in ("1.5", None, True, float("nan")):
        with pytest.raises(Exception, match="is not a finite number"):
            task.encode_target({"id": "a", "target": bad}, {})


@pytest.mark.slow
def test_the_adding_problem_learns_registers_and_answers_a_number_per_row(tmp_path):
    with working_dir(tmp_path):
        out = run_pipeline(tmp_path, ["recipe=adding", "recipe.length=10", "recipe.fetch.size=1500",
                                      "trainer.max_epochs=6", "model.hidden_size=32"])
        history = pd.read_csv(tmp_path / "reports" / "history.csv")
        assert history["val/loss"].iloc[-1] < 0.5 * history["val/loss"].iloc[0]  # the loss falls
        m = out["metrics"]
        assert m["test/loss"] < 0.5 * m["test/mean_baseline_loss"] and 0 < m["test/within"] <= 1
        assert (tmp_path / "reports" / "evaluate" / "predictions.png").is_file()
        use_tracking_uri(out["cfg"].mlflow.tracking_uri)
        model = mlflow.pyfunc.load_model("models:/seqpipe-adding@champion")
        frames = [[[0.5, 1], [0.25, 1]] + [[0.9, 0]] * 8, [[0.1, 0]] * 4 + [[0.8, 1], [0.3, 1]] + [[0.1, 0]] * 4]
        answer = model.predict(pd.DataFrame({"frames": frames}))
        assert list(answer.columns) == ["prediction", "model", "run_id"] and answer["model"][0] == "seqpipe-adding/1"
        assert np.allclose(answer["prediction"], [0.75, 1.1], atol=0.3)  # learnt from 1,200 series in seconds
        with pytest.raises(InputError, match="row 1: 3 features per step; this model expects 2") as e:
            model.predict(pd.DataFrame({"frames": [frames[0], [[1, 2, 3]]]}))
        assert e.value.get_http_status_code() == 400


def _gesture_ts(path: Path, n: int, seed: int) -> None:
    """Two-channel series of two classes: 'up' rises on channel 0, 'down' falls; lengths vary."""
    rng = np.random.default_rng(seed)
    lines = ["@problemName Gesture", "@timeStamps false", "@univariate false", "@dimensions 2",
             "@equalLength false", "@classLabel true up down", "@data"]
    for i in range(n):
        t = np.linspace(0, 1, rng.integers(8, 16))
        sign = 1 if i % 2 == 0 else -1
        dims = [sign * t + rng.normal(0, 0.1, len(t)), rng.normal(0, 1, len(t))]
        lines.append(":".join(",".join(f"{v:.3f}" for v in d) for d in dims) + (":up" if sign > 0 else ":down"))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def gestures(tmp_path_factory):
    root = tmp_path_factory.mktemp("gestures")
    _gesture_ts(root / "G_TRAIN.ts", 60, 0)
    _gesture_ts(root / "G_TEST.ts", 20, 1)
    with working_dir(root):
        out = run_pipeline(root, ["recipe=ts_file", f"recipe.fetch.train={root / 'G_TRAIN.ts'}",
                                  f"recipe.fetch.test={root / 'G_TEST.ts'}", "model.hidden_size=16",
                                  "trainer.max_epochs=15", "data.batch_size=8",
                                  "data.augment.speed=0.2", "data.augment.scale=0.1"])  # warped train series
    return root, out


@pytest.mark.slow
def test_a_frames_classifier_from_ts_files_predicts_from_a_jsonl_file(gestures, capsys):
    root, out = gestures
    assert out["metrics"]["test/acc"] >= 0.9 and out["stats"]["features"] == 2
    rows = [{"id": 1, "frames": [[0.1 * t, 0] for t in range(10)]},
            {"id": 2, "frames": [[-0.1 * t, 3] for t in range(9)]}]
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    uri = out["cfg"].mlflow.tracking_uri
    assert cli.main(["predict", "--model", "models:/seqpipe-ts_file@champion", "--input", str(root / "rows.jsonl"),
                     "--tracking-uri", uri]) == 0
    answer = pd.read_csv(root / "rows.predictions.csv")
    assert answer["label"].tolist() == ["up", "down"] and {"prob_up", "prob_down", "model"} <= set(answer.columns)
    assert cli.main(["predict", "--model", "models:/seqpipe-ts_file@champion", "--text", "up",
                     "--tracking-uri", uri]) == 2
    assert "this model reads frames, not text" in capsys.readouterr().err


@pytest.mark.slow
def test_mlflow_models_serve_answers_frames_and_refuses_bad_ones_with_400(gestures):
    root, out = gestures

    def post(url: str, records: list[dict]) -> tuple[int, dict]:
        return post_json(f"{url}/invocations", json.dumps({"dataframe_records": records}).encode())

    with models_serve("models:/seqpipe-ts_file@champion", out["cfg"].mlflow.tracking_uri, root) as url:
        status, answer = post(url, [{"frames": [[t, 0] for t in range(10)]},
                                    {"frames": [[-0.1 * t, 1.5] for t in range(7)]}])
        assert status == 200, answer
        assert [r["label"] for r in answer["predictions"]] == ["up", "down"]  # integers are numbers too
        for frames, reason in (([[1, 2, 3]], "row 0: 3 features per step; this model expects 2"),
                               ([[1, 2], [3]], "ragged frames"), ([[1, "x"]], "'x' is not a number"),
                               ([], "length 0")):
            status, answer = post(url, [{"frames": frames}])
            assert status == 400 and reason in answer["message"], answer

"""Gradient flow through time (seqpipe.models.gradflow): the profile is exact where it can be computed by hand,
bounded where theory bounds it, leaves the network as it was, refuses networks it cannot measure, and the callback
logs its plot and numbers to a real SQLite MLflow run without changing the training."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONF, working_dir

from seqpipe import fetch, prepare, train
from seqpipe.config import compose, validate
from seqpipe.errors import SeqpipeError
from seqpipe.models.attention import Seq2Seq
from seqpipe.models.gradflow import profile
from seqpipe.models.nets import RecurrentLM
from seqpipe.tasks import get_task

REGRESS, LM = get_task("regress"), get_task("lm")
FRAMES = {"kind": "frames", "features": 2}


def scaled_identity_relu(net: torch.nn.Module, a: float) -> None:
    """h_t = relu(W x_t + a h_{t-1}) with every weight positive and no bias: with positive inputs the relu is the
    identity, so dh_t/dh_{t-1} = a I and the gradient k steps back is exactly a^k times the last step's."""
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
        rnn = net.encoder.rnn
        rnn.weight_hh_l0.copy_(a * torch.eye(rnn.hidden_size))
        rnn.bias_hh_l0.zero_()
        rnn.bias_ih_l0.zero_()
        if hasattr(net.encoder.embedding, "proj"):
            net.encoder.embedding.proj.bias.zero_()


@pytest.mark.parametrize("a", [0.8, 1.1])
def test_the_profile_is_exact_by_hand_on_ragged_rows(a):
    torch.manual_seed(0)
    net = REGRESS.build_net({"inputs": FRAMES}, {"cell": "rnn", "nonlinearity": "relu", "embedding_dim": 4,
                                                  "hidden_size": 8})
    scaled_identity_relu(net, a)
    x, lengths = torch.rand(5, 12, 2), torch.tensor([12, 7, 12, 3, 9])
    with torch.no_grad():
        pred = net(x, lengths)[0].squeeze(-1)
    # each row's loss (pred - y)^2 has slope 1 at its prediction, so its gradient at its last step is the head's weight
    values = profile(REGRESS, net, {"x": x, "lengths": lengths, "y": pred - 0.5})
    assert len(values) == 12  # k = 0 .. 11: the longest row; k >= 3 only from the rows that long
    assert values[0] == pytest.approx(float(net.head.weight.detach().norm()), rel=1e-5)
    np.testing.assert_allclose(values / values[0], a ** np.arange(12), rtol=1e-4)


def test_a_language_model_chunk_is_measured_from_its_last_column():
    torch.manual_seed(0)
    net = RecurrentLM(10, cell="rnn", nonlinearity="relu", embedding_dim=4, hidden_size=6)
    scaled_identity_relu(net, 0.9)
    x = torch.randint(1, 10, (3, 15))
    values = profile(LM, net, {"x": x, "y": torch.randint(1, 10, (3, 15))})  # no lengths: every row has T steps
    assert len(values) == 15
    np.testing.assert_allclose(values / values[0], 0.9 ** np.arange(15), rtol=1e-4)


def test_a_tanh_rnn_vanishes_within_the_bound_its_weights_set():
    """tanh' <= 1, so ||dL/dh_{t-1}|| <= ||W_hh|| ||dL/dh_t||: with the recurrent matrix scaled to spectral norm 0.9
    the profile stays under 0.9^k. At torch's initialisation (spectral radius about 1/sqrt(3)) it falls below 1/1000
    of the last step's within 25 steps."""
    torch.manual_seed(1)
    net = REGRESS.build_net({"inputs": FRAMES}, {"cell": "rnn", "embedding_dim": 8, "hidden_size": 32})
    x, y = torch.rand(16, 60, 2), torch.rand(16) * 2
    batch = {"x": x, "lengths": torch.full((16,), 60), "y": y}
    at_init = profile(REGRESS, net, batch)
    assert 0 < at_init[25] < 1e-3 * at_init[0]
    with torch.no_grad():
        w = net.encoder.rnn.weight_hh_l0
        w.mul_(0.9 / torch.linalg.matrix_norm(w, ord=2))
    values = profile(REGRESS, net, batch)
    assert np.all(values > 0) and np.all(values <= 0.9 ** np.arange(60) * values[0] * (1 + 1e-4))


def test_measuring_leaves_the_network_as_it_was():
    torch.manual_seed(0)
    net = REGRESS.build_net({"inputs": FRAMES}, {"cell": "lstm", "embedding_dim": 4, "hidden_size": 8,
                                                  "dropout": 0.5, "num_layers": 2})
    batch = {"x": torch.rand(4, 9, 2), "lengths": torch.tensor([9, 5, 8, 2]), "y": torch.rand(4)}
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.25)
    net.train()
    values = profile(REGRESS, net, batch)
    assert len(values) == 9 and values[0] > 0
    assert net.training and net.encoder.trace is None and not net.encoder.rnn._forward_hooks
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in net.parameters())
    net.eval()
    assert np.array_equal(values, profile(REGRESS, net, batch))  # eval mode both times: no dropout in the measure


def test_networks_it_cannot_measure_are_refused():
    bi = REGRESS.build_net({"inputs": FRAMES}, {"cell": "gru", "hidden_size": 8, "bidirectional": True})
    batch = {"x": torch.rand(2, 5, 2), "lengths": torch.tensor([5, 3]), "y": torch.rand(2)}
    with pytest.raises(SeqpipeError, match="bidirectional encoder's backward direction.*model.bidirectional=false"):
        profile(REGRESS, bi, batch)
    with pytest.raises(SeqpipeError, match="sequence-to-sequence decoder attends to every encoder step"):
        profile(get_task("seq2seq"), Seq2Seq(10, 12, hidden_size=8), batch)
    with pytest.raises(SeqpipeError, match="train.gradient_flow=true .* set model.bidirectional=false"):
        validate(compose(["recipe=imdb", "train.gradient_flow=true"], config_dir=CONF))
    with pytest.raises(SeqpipeError, match="train.gradient_flow_every=0 must be a positive integer"):
        validate(compose(["train.gradient_flow_every=0"], config_dir=CONF))


def test_the_callback_logs_each_profile_to_the_run_and_leaves_training_unchanged(tmp_path):
    base = ["recipe=adding", "recipe.length=10", "recipe.fetch.size=120", "model.hidden_size=8",
            "model.embedding_dim=4", "model.dropout=0.2", "data.batch_size=20", "data.eval_batch_size=12",
            "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "optim.warmup_steps=0", f"paths.raw={tmp_path}/raw", f"paths.prepared={tmp_path}/prepared",
            f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"]
    with working_dir(tmp_path):
        cfg = compose([*base, f"paths.reports={tmp_path}/reports"], config_dir=CONF)
        fetch.run(cfg)
        prepare.run(cfg)
        runs = {}
        for flow in (False, True):
            runs[flow] = train.run(compose([*base, f"train.gradient_flow={str(flow).lower()}",
                                            "train.gradient_flow_every=2", f"paths.models={tmp_path}/m{flow}",
                                            f"paths.reports={tmp_path}/r{flow}"], config_dir=CONF))
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        logged = sorted(a.path for a in client.list_artifacts(runs[True]["run_id"], "gradient_flow"))
        assert logged == [f"gradient_flow/epoch_00{e}.{ext}" for e in (0, 2) for ext in ("json", "png")]
        numbers = json.loads(open(client.download_artifacts(runs[True]["run_id"], "gradient_flow/epoch_002.json",
                                                            str(tmp_path))).read())
        assert numbers["k"] == list(range(10)) and numbers["rows"] == [12] * 10 and numbers["cell"] == "lstm"
        assert all(v > 0 for v in numbers["norm"])
        assert not client.list_artifacts(runs[False]["run_id"], "gradient_flow")
    # the measurement touched neither the optimizer, the gradients nor the random numbers (dropout draws them): the
    # same training
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "rTrue" / "history.csv").drop(columns="train/tokens_per_sec"),
                                  pd.read_csv(tmp_path / "rFalse" / "history.csv").drop(columns="train/tokens_per_sec"))

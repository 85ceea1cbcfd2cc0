"""CTC: prefix beam search against a brute-force sum over alignments, frame stacking, the loss, and a tiny synthetic
'speech' set end to end (prepare drops too-short examples, training lowers the loss, CER far below the empty
output's 1.0, the registered model transcribes a request)."""

from __future__ import annotations

import itertools
import json
import math

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONF, working_dir

from seqpipe.config import compose
from seqpipe.tasks.ctc import CTCNet, collate, frames_needed
from seqpipe.tasks.ctc_decode import greedy, prefix_beam_search


def brute_force(logp: np.ndarray) -> dict[tuple[int, ...], float]:
    """log P(labelling) for every labelling: the sum over all C^T alignments, collapsed (repeats, then blanks)."""
    T, C = logp.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(C), repeat=T):
        labels = tuple(k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k))
        p = math.exp(sum(logp[t, k] for t, k in enumerate(path)))
        totals[labels] = totals.get(labels, 0.0) + p
    return {k: math.log(v) for k, v in totals.items()}


@pytest.mark.parametrize("seed", range(6))
def test_prefix_beam_search_finds_the_most_probable_labelling(seed):
    rng = np.random.default_rng(seed)
    T, C = 6, 3
    logits = rng.normal(size=(T, C)) * 1.5
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    exact = brute_force(logp)
    best = max(exact, key=exact.get)
    found = prefix_beam_search(logp, width=len(exact))  # wide enough to keep every prefix
    assert tuple(found[0][0]) == best
    assert found[0][1] == pytest.approx(exact[best], abs=1e-9)
    for labels, score in found:  # every score is the labelling's whole probability, in order
        assert score == pytest.approx(exact[tuple(labels)], abs=1e-9)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    for labels, score in prefix_beam_search(logp, width=2):  # a narrow beam sums over the alignments it kept
        assert score <= exact[tuple(labels)] + 1e-9
    # torch's CTC loss is the same sum over alignments
    nll = torch.nn.functional.ctc_loss(torch.tensor(logp).unsqueeze(1), torch.tensor([list(best)]), torch.tensor([T]),
                                       torch.tensor([len(best)]), reduction="sum")
    assert -float(nll) == pytest.approx(exact[best], abs=1e-6)


def test_greedy_collapses_repeats_and_drops_blanks():
    logp = np.log(np.array([[.1, .8, .1], [.1, .8, .1], [.8, .1, .1], [.1, .8, .1], [.1, .1, .8], [.9, .05, .05]]))
    labels, score = greedy(logp)
    assert labels == [1, 1, 2]
    assert score == pytest.approx(math.log(.8) * 5 + math.log(.9))
    assert frames_needed([1, 1, 2]) == 4 and frames_needed([1, 2, 3]) == 3 and frames_needed([]) == 0


@pytest.mark.parametrize("stack", [1, 3])
def test_stacked_net_ignores_padding(stack):
    torch.manual_seed(0)
    inputs = {"kind": "frames", "features": 4, "mean": [0.0] * 4, "std": [1.0] * 4}
    net = CTCNet(inputs, 5, stack=stack, cell="gru", embedding_dim=8, hidden_size=8, bidirectional=True).eval()
    xs = [torch.randn(n, 4) for n in (7, 3, 10)]
    batch = collate([(x, torch.tensor([1, 2])) for x in xs])
    with torch.no_grad():
        together, _ = net(batch["x"], batch["lengths"])
        for i, x in enumerate(xs):
            alone, _ = net(x.unsqueeze(0))
            assert alone.shape[1] == math.ceil(len(x) / stack)
            assert torch.allclose(together[i, : alone.shape[1]], alone[0], atol=1e-5)


@pytest.mark.parametrize("override, message", [("ctc.stack=0", "ctc.stack=0 must be a positive integer"),
                                               ("ctc.unit=phone", "ctc.unit='phone' is not allowed"),
                                               ("prepare.inputs=tokens", "prepare.inputs=tokens does not work")])
def test_bad_ctc_config_is_refused(override, message):
    from seqpipe.config import validate
    from seqpipe.errors import SeqpipeError

    with pytest.raises(SeqpipeError, match=message):
        validate(compose(["recipe=adding", "task=ctc", override], config_dir=CONF))


# --- a tiny synthetic 'speech' set end to end -----------------------------------------------------------------------
SYMBOLS, F = "abcd ", 8


def utterances(n: int, seed: int = 0) -> list[dict]:
    """Each symbol a noisy burst of its own feature pattern lasting 2-5 frames, with 1-3 silent frames around."""
    patterns = np.random.default_rng(0).normal(size=(len(SYMBOLS), F)) * 2  # the same 'sounds' in every set
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        letters = list(rng.choice(list("abcd"), size=rng.integers(2, 7)))
        if len(letters) > 3:
            letters.insert(int(rng.integers(1, len(letters) - 1)), " ")
        frames = [rng.normal(size=(int(rng.integers(1, 4)), F)) * 0.3]
        for s in letters:
            frames.append(patterns[SYMBOLS.index(s)] + rng.normal(size=(int(rng.integers(2, 6)), F)) * 0.5)
            frames.append(rng.normal(size=(int(rng.integers(1, 4)), F)) * 0.3)
        rows.append({"id": f"u{i}", "frames": np.concatenate(frames).round(3).tolist(), "output": "".join(letters),
                     "group": f"voice{i % 4}"})
    too_short = [{"id": f"short{i}", "frames": [[0.0] * F] * 3, "output": "aab"} for i in range(5)]
    return rows + too_short


@pytest.fixture(scope="module")
def ctc_model(tmp_path_factory):
    from seqpipe import evaluate, prepare, register, train

    root = tmp_path_factory.mktemp("ctc")
    (root / "data/raw").mkdir(parents=True)
    (root / "data/raw/documents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in utterances(400)))
    cfg = compose(["recipe=adding", "recipe.name=ctc-synthetic", "task=ctc", "evaluate.beam_width=4",
                   "model.cell=gru", "model.bidirectional=true", "model.num_layers=1", "model.embedding_dim=24",
                   "model.hidden_size=32", "data.batch_size=16", "data.eval_batch_size=64", "optim.lr=0.01",
                   "optim.warmup_steps=0", "trainer.max_epochs=8", "train.patience=20", "ctc.stack=2",
                   "prepare.val_fraction=0.15", "prepare.test_fraction=0.15",
                   f"paths.raw={root}/data/raw", f"paths.prepared={root}/data/prepared",
                   f"paths.models={root}/models", f"paths.reports={root}/reports",
                   f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}", "trainer.enable_progress_bar=false",
                   "trainer.enable_model_summary=false"], config_dir=CONF)
    with working_dir(root):
        stats = prepare.run(cfg)
        train.run(cfg)
        metrics = evaluate.run(cfg)
        registered = register.run(cfg)
    return root, {"cfg": cfg, "stats": stats, "metrics": metrics, "registered": registered}


def test_ctc_end_to_end(ctc_model, capsys):
    root, out = ctc_model
    stats, m = out["stats"], out["metrics"]
    assert stats["dropped_short"] == 5 and stats["target_vocab_size"] == len(SYMBOLS) + 1
    history = pd.read_csv(root / "reports/history.csv")
    losses = history["val/loss"].dropna().tolist()
    assert losses[-1] < 0.5 * losses[0], losses
    print(f"\nctc synthetic: val loss {losses[0]:.3f} -> {losses[-1]:.3f}; test "
          + ", ".join(f"{k} {v:.4f}" for k, v in sorted(m.items())))
    assert m["test/cer"] < 0.25 and m["test/cer_greedy"] < 0.25  # the empty output's CER is 1.0
    assert 0 <= m["test/wer"] <= 1.5
    lines = (root / "reports/evaluate/predictions.tsv").read_text().splitlines()
    assert lines[0] == "id\treference\tprediction\tscore" and len(lines) > 10

    mlflow.set_tracking_uri(out["cfg"].mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/seqpipe-ctc-synthetic@champion")
    request = [r for r in utterances(400, seed=7) if r["id"].startswith("u")][:6]
    frames = pd.DataFrame({"frames": [r["frames"] for r in request]})
    beam = model.predict(frames)
    greedy_answer = model.predict(frames, params={"beam_width": 1})
    assert list(beam.columns[:2]) == ["text", "score"] and beam["model"].iloc[0] == "seqpipe-ctc-synthetic/1"
    right = sum(t == r["output"] for t, r in zip(beam["text"], request))
    assert right >= 3, (beam["text"].tolist(), [r["output"] for r in request])
    assert (beam["score"] <= 0).all() and (greedy_answer["score"] <= 0).all()
    net = model.unwrap_python_model().net  # beam width 1 is the best path
    assert net.stack == 2
    xs = [torch.tensor(r["frames"], dtype=torch.float32) for r in request]
    tokens = model.unwrap_python_model().meta["target"]["tokens"]
    assert greedy_answer["text"].tolist() == ["".join(tokens[i] for i in greedy(lp)[0]) for lp in net.log_probs(xs)]
    with pytest.raises(Exception, match="beam_width"):
        model.predict(frames, params={"beam_width": 99})
    with pytest.raises(Exception, match="row 0"):
        model.predict(pd.DataFrame({"frames": [[[0.0] * (F + 1)] * 4]}))


def test_train_refuses_data_prepared_with_another_stack(ctc_model):
    from omegaconf import OmegaConf

    from seqpipe.data.meta import prepared_meta
    from seqpipe.errors import SeqpipeError
    from seqpipe.tasks import get_task

    root, out = ctc_model
    cfg = OmegaConf.merge(out["cfg"], {"ctc": {"stack": 3}})
    with pytest.raises(SeqpipeError, match="prepared with ctc.stack=2, but the config says ctc.stack=3"):
        get_task("ctc").datamodule(cfg, prepared_meta(cfg))



def test_spec_augment_masks_bands_and_spans_of_train_clips_only():
    from seqpipe.tasks.ctc import spec_augment

    x = torch.arange(200 * 40, dtype=torch.float32).reshape(200, 40)
    masked = spec_augment(x, np.random.default_rng(0), freq_masks=2, freq_width=8, time_masks=2, time_width=10)
    assert masked.shape == x.shape and not torch.equal(masked, x) and torch.equal(x[0, :3], torch.arange(3.0))
    changed_cols = (masked != x).all(0).sum()  # a masked band changes every frame of its features
    changed_rows = (masked != x).all(1).sum()  # a masked span changes every feature of its frames
    assert 1 <= changed_cols <= 16 and 1 <= changed_rows <= 20
    again = spec_augment(x, np.random.default_rng(0), freq_masks=2, freq_width=8, time_masks=2, time_width=10)
    assert torch.equal(masked, again)
    assert torch.equal(spec_augment(x, np.random.default_rng(0)), x)  # no masks: the clip as it was
    short = torch.ones(4, 40)  # a span is at most a fifth of the clip: nothing to mask in 4 frames
    assert torch.equal(spec_augment(short * 2, np.random.default_rng(1), time_masks=3, time_width=10), short * 2)


def test_snap_puts_each_word_onto_the_nearest_lexicon_word():
    from seqpipe.tasks.ctc_decode import snap

    lexicon = ["of", "ten", "hearts", "spades", "nine", "clubs"]  # most frequent first: it wins a tie
    assert snap("tin f siarts", lexicon) == "ten of hearts"
    assert snap("nine of clubs", lexicon) == "nine of clubs" and snap("", lexicon) == ""
    assert snap("xx", ["ab", "cd"]) == "ab"  # a tie: the more frequent word

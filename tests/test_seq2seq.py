"""Sequence to sequence: attention, decoding (greedy, beam, sampling), the scores, the grouped split, and a tiny
pairs recipe end to end through register and predict, with its bad inputs."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from conftest import CONF, run_pipeline, working_dir

from seqpipe import cli
from seqpipe.config import compose, validate
from seqpipe.data.splits import split_examples
from seqpipe.data.vocab import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID, SUPPRESS
from seqpipe.errors import SeqpipeError
from seqpipe.metrics.text import bleu, edit_distance, error_rates, folded_tokens
from seqpipe.models.attention import Attention, Seq2Seq
from seqpipe.models.decoding import beam_search, greedy, length_penalty, sample
from seqpipe.tasks.seq2seq import Seq2SeqTask, TeacherForcing, collate
from seqpipe.tasks.seq2seq_eval import decode

V = 12  # ids 4..11 are tokens


def padded(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.nn.utils.rnn.pad_sequence(xs, batch_first=True, padding_value=PAD_ID), \
        torch.tensor([len(x) for x in xs])


def sources(n: int = 6, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, V, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g) for _ in range(n)]


@pytest.mark.parametrize("kind", ["bahdanau", "luong"])
def test_attention_sums_to_one_over_valid_positions(kind):
    torch.manual_seed(0)
    att = Attention(kind, 8, 6)
    memory, query = torch.randn(3, 5, 6), torch.randn(3, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    context, w = att(query, att.keys(memory), memory, mask)
    assert torch.allclose(w.sum(-1), torch.ones(3))
    assert (w[~mask] == 0).all() and (w[mask] > 0).all()
    assert torch.allclose(w[2, 0], torch.tensor(1.0)) and torch.allclose(context[2], memory[2, 0])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_changes_no_output(bidirectional):
    torch.manual_seed(0)
    net = Seq2Seq(V, V, "lstm", 8, 16, 2, bidirectional=bidirectional).eval()
    xs = sources(4)
    y_in = torch.full((4, 5), BOS_ID)
    x, lengths = padded(xs)
    with torch.no_grad():
        together, w = net(x, lengths, y_in)
        for i, src in enumerate(xs):
            alone, w1 = net(src.unsqueeze(0), torch.tensor([len(src)]), y_in[:1])
            assert torch.allclose(together[i], alone[0], atol=1e-5)
            assert torch.allclose(w[i, :, : len(src)], w1[0], atol=1e-5)


def start(net: Seq2Seq, xs: list[torch.Tensor]) -> tuple[torch.Tensor, object]:
    x, lengths = padded(xs)
    return net.step(net.bos(len(xs)), net.start(x, lengths))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "lstm_ref"])
def test_beam_width_one_is_greedy(cell):
    torch.manual_seed(1)
    net = Seq2Seq(V, V, cell, 8, 16, bidirectional=True).eval()
    xs = sources(8)
    with torch.no_grad():
        g = greedy(net.step, *start(net, xs), 12, EOS_ID, SUPPRESS)
        b = beam_search(net.step, net.select, *start(net, xs), 1, 12, EOS_ID, 1.0, 1, SUPPRESS)
    assert [h.tokens for h in g] == [h[0].tokens for h in b]
    assert [h.finished for h in g] == [h[0].finished for h in b]
    for gh, bh in zip(g, b):
        assert gh.logprobs == pytest.approx(bh[0].logprobs, abs=1e-5)


def test_beam_returns_hypotheses_in_score_order_and_beats_greedy():
    torch.manual_seed(2)
    net = Seq2Seq(V, V, "gru", 8, 16).eval()
    xs = sources(6)
    with torch.no_grad():
        found = beam_search(net.step, net.select, *start(net, xs), 4, 10, EOS_ID, 0.0, 4, SUPPRESS)
        g = greedy(net.step, *start(net, xs), 10, EOS_ID, SUPPRESS)
    for hyps, gh in zip(found, g):
        assert len(hyps) == 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 4  # distinct hypotheses
        for h in hyps:  # the score is the summed log-probability (alpha 0), the stop token included
            assert h.score == pytest.approx(h.logprob, abs=1e-4)
            assert all(t not in SUPPRESS and t != EOS_ID for t in h.tokens)
        if gh.finished:  # with alpha 0 the beam's best is at least as likely as the greedy output
            assert hyps[0].score >= gh.logprob - 1e-4


def test_beam_scores_are_rescored_log_probabilities():
    """A hypothesis's per-token log-probabilities are the network's own, given the tokens before."""
    torch.manual_seed(3)
    net = Seq2Seq(V, V, "lstm", 8, 16).eval()
    xs = sources(3)
    x, lengths = padded(xs)
    with torch.no_grad():
        found = beam_search(net.step, net.select, *start(net, xs), 3, 8, EOS_ID, 1.0, 2, SUPPRESS)
        for i, hyps in enumerate(found):
            for h in hyps:
                tokens = [*h.tokens, EOS_ID] if h.finished else h.tokens
                y_in = torch.tensor([[BOS_ID, *tokens[:-1]]])
                logits, _ = net(x[i: i + 1, : lengths[i]], lengths[i: i + 1], y_in)
                lp = torch.log_softmax(logits[0].index_fill(-1, torch.tensor(SUPPRESS), float("-inf")), -1)
                expected = lp[torch.arange(len(tokens)), torch.tensor(tokens)]
                assert h.logprobs == pytest.approx(expected.tolist(), abs=1e-4)
                assert h.score == pytest.approx(sum(h.logprobs) / length_penalty(len(h.tokens), 1.0), abs=1e-4)


def test_no_stop_token_stops_at_max_len_and_is_flagged():
    torch.manual_seed(0)
    net = Seq2Seq(V, V, "gru", 8, 16).eval()
    xs = sources(3)
    with torch.no_grad():  # a decoder that is never allowed <eos> runs to the limit
        g = greedy(net.step, *start(net, xs), 7, EOS_ID, (*SUPPRESS, EOS_ID))
        b = beam_search(net.step, net.select, *start(net, xs), 3, 7, EOS_ID, 1.0, 2, (*SUPPRESS, EOS_ID))
    assert all(len(h.tokens) == 7 and not h.finished for h in g)
    assert all(len(h.tokens) == 7 and not h.finished for hyps in b for h in hyps)


def test_sampling_is_seeded_and_greedy_at_temperature_zero():
    torch.manual_seed(0)
    net = Seq2Seq(V, V, "gru", 8, 16).eval()
    xs = sources(4)
    with torch.no_grad():
        a = decode(net, xs, temperature=1.0, seed=7, max_len=10)
        b = decode(net, xs, temperature=1.0, seed=7, max_len=10)
        g = decode(net, xs, 1, max_len=10)
        first, _ = next(sample(net.step, *start(net, xs), 1, temperature=0, suppress=SUPPRESS))
    assert [h[0].tokens for h in a] == [h[0].tokens for h in b]
    assert first.tolist() == [h[0].tokens[0] if h[0].tokens else EOS_ID for h in g]


def test_teacher_forced_loss_falls_on_reversing():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = Seq2Seq(V, V, "gru", 16, 48, bidirectional=True)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    task = Seq2SeqTask()
    losses = []
    for i in range(150):
        xs = sources(24, seed=i)
        batch = collate([(x, x.flip(0)) for x in xs])
        step = task.step(net, batch, None)
        opt.zero_grad()
        step.loss.backward()
        opt.step()
        losses.append(step.loss.item())
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10
    xs = sources(20, seed=999)
    found = decode(net, xs, 3, 12)
    rates = error_rates([h[0].tokens for h in found], [[x.flip(0).tolist()] for x in xs])
    assert rates["exact_match"] > 0.5


def test_collate_shifts_targets_and_masks_padding():
    batch = collate([(torch.tensor([4, 5, 6]), torch.tensor([7])), (torch.tensor([4]), torch.tensor([8, 9]))])
    assert batch["x"].tolist() == [[4, 5, 6], [4, PAD_ID, PAD_ID]]
    assert batch["lengths"].tolist() == [3, 1]
    assert batch["y_in"].tolist() == [[BOS_ID, 7, PAD_ID], [BOS_ID, 8, 9]]
    assert batch["y"].tolist() == [[7, EOS_ID, IGNORE_INDEX], [8, 9, EOS_ID]]


def test_teacher_forcing_schedule():
    constant, schedule = TeacherForcing(0.8, None), TeacherForcing(1.0, 0.5)
    assert constant.ratio(0.0) == constant.ratio(1.0) == 0.8
    assert schedule.ratio(0.0) == 1.0 and schedule.ratio(0.5) == pytest.approx(0.75) and schedule.ratio(2) == 0.5


def test_scores_on_hand_computed_examples():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a", "b"]) == 2
    hyps = [["P", "AY1", "P"], ["T", "AH0", "M", "EY1", "T", "OW2"], ["K", "AE1", "T"]]
    refs = [[["P", "AY1", "P"]],                                                # right
            [["T", "AH0", "M", "EY1", "T", "OW2"], ["T", "AH0", "M", "AA1", "T", "OW2"]],  # right: 1st reference
            [["K", "AA1", "T", "S"], ["K", "AE1", "T", "S"]]]                   # 1 deletion from the 2nd
    r = error_rates(hyps, refs)
    assert r["exact_match"] == pytest.approx(2 / 3) and r["seq_error_rate"] == pytest.approx(1 / 3)
    assert r["token_error_rate"] == pytest.approx(1 / (3 + 6 + 4))  # edits to the closest reference / its length
    # scored without stress (evaluate.fold, as the g2p papers score): a wrong stress digit is no longer an error
    folded = error_rates([folded_tokens(h, "[012]$") for h in [["K", "AE2", "T", "S"], ["AH0", "B"]]],
                         [[folded_tokens(r, "[012]$") for r in rs] for rs in [[["K", "AE1", "T", "S"]], [["AH1"]]]])
    assert folded_tokens(["P", "AY1", "0"], "[012]$") == ["P", "AY"]  # a token left empty is dropped
    assert folded["exact_match"] == pytest.approx(1 / 2) and folded["token_error_rate"] == pytest.approx(1 / 5)
    assert error_rates([["K", "AE2", "T", "S"]], [[["K", "AE1", "T", "S"]]])["exact_match"] == 0
    assert bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(100.0)
    assert bleu(["a b"], [["the cat sat on the mat"]]) < 5


def test_split_keeps_each_group_together():
    rows = [{"id": f"{w}({k})", "text": w, "output": f"{w}-{k}", "group": w}
            for i, w in enumerate(f"w{n}" for n in range(300)) for k in range(1 + i % 3)]
    splits = split_examples(rows, 0.1, 0.1, seed=0, stratify=False)
    where = {}
    for name, part in splits.items():
        for r in part:
            assert where.setdefault(r["group"], name) == name
    assert sum(map(len, splits.values())) == len(rows)
    assert 0.07 < len(splits["test"]) / len(rows) < 0.13 and 0.07 < len(splits["val"]) / len(rows) < 0.13


def test_config_refuses_bad_seq2seq_values():
    base = ["recipe=pairs"]
    validate(compose(base, config_dir=CONF))
    for override, words in [("seq2seq.attention=dot", "bahdanau, luong"), ("seq2seq.teacher_forcing=1.5", "[0, 1]"),
                            ("evaluate.beam_width=0", "positive integer"), ("evaluate.max_output_len=-3", "null"),
                            ("train.carry_state=true", "carry_state=false"),
                            ("evaluate.fold={remove:x}", "must be {suffix: _name, remove: REGEX}"),
                            ("evaluate.fold={suffix:nostress,remove:x}", "must start with _"),
                            ("evaluate.fold={suffix:_x,remove:'[0-'}", "is not a regular expression")]:
        with pytest.raises(SeqpipeError, match=words.replace("[", r"\[").replace("]", r"\]")):
            validate(compose([*base, override], config_dir=CONF))


# --- end to end ----------------------------------------------------------------------------------------------------
def write_pairs(path: Path, n: int = 500, seed: int = 0) -> None:
    """Words of a, b, c, d, e -> their letters reversed, upper case, space-separated; some words have a second
    output (the letters in order), as some words have two pronunciations."""
    rng, seen, rows = random.Random(seed), set(), ["source\ttarget"]
    while len(seen) < n:
        w = "".join(rng.choice("abcde") for _ in range(rng.randint(2, 6)))
        if w not in seen:
            seen.add(w)
            rows.append(f"{w}\t{' '.join(reversed(w.upper()))}")
            if rng.random() < 0.1:
                rows.append(f"{w}\t{' '.join(w.upper())}")
    rows += ["\tA", "ab\t"]  # an empty input and an empty output: skipped, counted
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def pairs_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    write_pairs(root / "pairs.tsv")
    with working_dir(root):
        out = run_pipeline(root, ["recipe=pairs", f"recipe.fetch.path={root / 'pairs.tsv'}", "prepare.max_len=12",
                                  "model.embedding_dim=16", "model.hidden_size=48", "data.batch_size=16",
                                  "trainer.max_epochs=8", "optim.lr=0.01", "optim.warmup_steps=0",
                                  "evaluate.beam_width=3", "evaluate.prompt=abcd",
                                  "evaluate.fold={suffix:_no_ab,remove:'[AB]'}"])
        yield root, out


@pytest.mark.slow
def test_pairs_learn_and_report(pairs_model):
    root, out = pairs_model
    m = out["metrics"]
    assert m["test/exact_match"] > 0.6 and m["test/token_error_rate"] < 0.15
    assert {"test/bleu", "test/exact_match_greedy", "test/unfinished", "test/token_acc"} <= set(m)
    # scored again with A and B taken out of every output (evaluate.fold): what was equal stays equal
    assert m["test/exact_match_no_ab"] >= m["test/exact_match"] and "test/token_error_rate_no_ab_greedy" in m
    report = root / "reports" / "evaluate"
    lines = (report / "predictions.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:4] == ["source", "prediction", "references", "correct"]
    assert len(lines) - 1 == len({line.split("\t")[0] for line in lines[1:]})  # one row per distinct input
    assert (report / "attention.png").stat().st_size > 5000
    meta = json.loads((root / "data" / "prepared" / "meta.json").read_text())
    assert meta["task"] == "seq2seq" and meta["target"]["tokens"][4:] and meta["target"]["longest"] == 6


@pytest.mark.slow
def test_seqpipe_export_writes_encoder_and_decoder_graphs_that_translate_as_pytorch(pairs_model, tmp_path, capsys):
    from seqpipe.serving.onnx_export import load_served
    from seqpipe.tasks.seq2seq_eval import decode_params

    root, out = pairs_model
    uri, model = out["cfg"].mlflow.tracking_uri, "models:/seqpipe-pairs@champion"
    for quantize in ([], ["--quantize", "int8"]):
        with working_dir(root):
            code = cli.main(["export", "--model", model, "--tracking-uri", uri, "--out",
                             str(tmp_path / f"o{len(quantize)}"), *quantize])
        err = capsys.readouterr().err
        assert code == 0, err[-2000:]
        assert "decoder" in err and "max |logit difference| vs PyTorch" in err
    words = ["abcd", "edd", "cab", "bade", "dcbae"]
    mlflow.set_tracking_uri(uri)
    want = mlflow.pyfunc.load_model(model).predict(pd.DataFrame({"text": words}))["output"].tolist()
    for folder in ("o0", "o2"):
        served = load_served(tmp_path / folder)
        p = decode_params(None, served)  # the beam width and output limit the model was registered with
        assert p["width"] == 3
        xs, _ = served.encode_texts(words, "translate")
        hyps = decode(served.net, xs, p["width"], p["max_len"], p["alpha"], p["n_best"])
        vocab, tok = served.state["target_vocab"], served.state["target_tokenizer"]
        got = [tok.detokenize(vocab.decode(h[0].tokens)) for h in hyps]
        assert got == want if folder == "o0" else sum(a == b for a, b in zip(got, want)) >= 4, (folder, got, want)


@pytest.mark.slow
def test_pairs_predict_text_file_and_n_best(pairs_model, capsys, tmp_path):
    root, out = pairs_model
    uri, model = out["cfg"].mlflow.tracking_uri, "models:/seqpipe-pairs@champion"
    assert cli.main(["predict", "--model", model, "--text", "abcd", "--n-best", "3", "--tracking-uri", uri]) == 0
    line = capsys.readouterr().out
    assert "output=D C B A" in line
    n_best = json.loads(line.split("n_best=")[1].split("\t")[0])
    assert len(n_best) == 3 and n_best[0][0] == "D C B A"
    words = tmp_path / "words.txt"
    words.write_text("abc\nedd\n\ncab\n")
    assert cli.main(["predict", "--model", model, "--input", str(words), "--output", str(tmp_path / "prons.tsv"),
                     "--tracking-uri", uri]) == 0
    table = pd.read_csv(tmp_path / "prons.tsv", sep="\t")
    assert table["text"].tolist() == ["abc", "edd", "cab"]
    assert (table["output"] == ["C B A", "D D E", "B A C"]).sum() >= 2 and table["complete"].all()


@pytest.mark.slow
def test_pairs_bad_inputs(pairs_model, capsys):
    root, out = pairs_model
    mlflow.set_tracking_uri(out["cfg"].mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/seqpipe-pairs@champion")
    with pytest.raises(Exception, match="empty input text"):
        model.predict(pd.DataFrame({"text": [""]}))
    with pytest.raises(Exception, match="at most 12 .*prepare.max_len"):
        model.predict(pd.DataFrame({"text": ["abcdeabcdeabc"]}))
    with pytest.warns(UserWarning, match=r"read as <unk>: \['x', 'z'\]"):
        row = model.predict(pd.DataFrame({"text": ["axz"]})).iloc[0]
    assert row["unk_fraction"] == pytest.approx(2 / 3)
    with pytest.warns(UserWarning, match="without <eos>"):  # stops at the limit, flagged
        row = model.predict(pd.DataFrame({"text": ["abcde"]}), params={"max_output_len": 2}).iloc[0]
    assert not row["complete"] and len(row["output"].split()) == 2
    for params, words in [({"beam_width": 99}, "serve.max_beam_width"), ({"n_best": 4, "beam_width": 2}, "n_best"),
                          ({"n_best": 2, "temperature": 1.0}, "needs beam search")]:
        with pytest.raises(Exception, match=words):
            model.predict(pd.DataFrame({"text": ["abc"]}), params=params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean input answers without a warning
        model.predict(pd.DataFrame({"text": ["abc"]}))
    assert cli.main(["predict", "--model", "models:/seqpipe-pairs@champion", "--text", "", "--tracking-uri",
                     out["cfg"].mlflow.tracking_uri]) != 0
    assert "empty input text" in capsys.readouterr().err


def test_prepare_drops_long_pairs_and_keeps_groups_together(tmp_path, capsys):
    from seqpipe import fetch, prepare
    from seqpipe.data.examples import ExampleDataset

    write_pairs(tmp_path / "pairs.tsv", n=200)
    cfg = compose(["recipe=pairs", f"recipe.fetch.path={tmp_path / 'pairs.tsv'}", "prepare.max_len=4",
                   f"paths.raw={tmp_path}/raw", f"paths.prepared={tmp_path}/prepared",
                   f"paths.reports={tmp_path}/reports"], config_dir=CONF)
    fetch.run(cfg)
    stats = prepare.run(cfg)
    err = capsys.readouterr().err
    assert "skipped 2 rows with an empty input or output" in err
    assert stats["dropped_long"] > 0 and f"dropped {stats['dropped_long']} pairs with an input or output over " \
        "prepare.max_len=4" in err
    words = {}
    for split in ("train", "val", "test"):
        ds = ExampleDataset(tmp_path / "prepared" / f"{split}.npz")
        for i in range(len(ds)):
            x, y = ds[i]
            assert len(x) <= 4 and len(y) <= 4
            assert words.setdefault(tuple(x.tolist()), split) == split  # a word's outputs in one split


# --- the language model decodes through the same module -------------------------------------------------------------
def test_language_model_beam_and_logprobs():
    from seqpipe.data.text_tokens import CharTokenizer
    from seqpipe.data.vocab import Vocab
    from seqpipe.models.nets import RecurrentLM
    from seqpipe.models.sampling import beam, stream

    vocab, tok = Vocab(["<pad>", "<unk>", "<bos>", "<eos>", *"abcdefgh"]), CharTokenizer()
    torch.manual_seed(0)
    net = RecurrentLM(len(vocab), "gru", 8, 16).eval()
    greedy_lps: list = []
    greedy_text = "".join(stream(net, vocab, tok, "abc", 12, temperature=0, logprobs=greedy_lps))
    beam_lps: list = []
    assert beam(net, vocab, tok, "abc", 12, width=1, logprobs=beam_lps) == greedy_text
    assert [p for p, _ in beam_lps] == [p for p, _ in greedy_lps] == list(greedy_text)
    assert [lp for _, lp in beam_lps] == pytest.approx([lp for _, lp in greedy_lps], abs=1e-5)
    with torch.no_grad():  # each log-probability is the network's, given the prompt and the tokens before
        ids = torch.tensor([vocab.encode(list("abc" + greedy_text))])
        logits, _ = net(ids)
        lp = torch.log_softmax(logits[0].index_fill(-1, torch.tensor(SUPPRESS), float("-inf")), -1)
        expected = [float(lp[2 + i, ids[0, 3 + i]]) for i in range(len(greedy_text))]
    assert [lp for _, lp in greedy_lps] == pytest.approx(expected, abs=1e-5)
    wide: list = []
    text5 = beam(net, vocab, tok, "abc", 12, width=5, alpha=0.0, logprobs=wide)
    assert len(text5) == len(wide) <= 12
    if len(text5) == len(greedy_text) == 12:  # same length, no stop: the beam's output is at least as likely
        assert sum(lp for _, lp in wide) >= sum(lp for _, lp in greedy_lps) - 1e-5


@pytest.mark.slow
def test_pairs_model_is_served_with_decoding_params(pairs_model):
    from conftest import models_serve, post_json

    root, out = pairs_model
    with models_serve("models:/seqpipe-pairs@champion", out["cfg"].mlflow.tracking_uri, root) as url:
        status, answer = post_json(f"{url}/invocations", json.dumps({
            "dataframe_records": [{"text": "abcd"}, {"text": "ed"}],
            "params": {"beam_width": 3, "n_best": 2}}).encode())
        assert status == 200, answer
        rows = answer["predictions"]
        assert rows[0]["output"] == "D C B A" and len(json.loads(rows[1]["n_best"])) == 2
        assert rows[0]["model"] == "seqpipe-pairs/1" and rows[0]["complete"] is True
        status, answer = post_json(f"{url}/invocations", json.dumps({"dataframe_records": [{"text": ""}]}).encode())
        assert status == 400 and "empty input text" in answer["message"]


@pytest.mark.slow
def test_new_default_decoding_registers_a_new_version(pairs_model):
    """(Last in this file: it moves @champion.) The served model decodes by default as evaluate scored it; a new beam
    width makes a new version of the same training run, and registering it again adds none."""
    from omegaconf import OmegaConf

    from seqpipe import register

    root, out = pairs_model
    cfg = OmegaConf.merge(out["cfg"], {"evaluate": {"beam_width": 2}})
    with working_dir(root):
        first = register.run(cfg)
        again = register.run(cfg)
    assert first["new_version"] and first["version"] == 2 and not again["new_version"]
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    old, new = (mlflow.pyfunc.load_model(f"models:/seqpipe-pairs/{v}").unwrap_python_model() for v in (1, 2))
    assert old.decode["beam_width"] == 3 and new.decode["beam_width"] == 2

"""The tweets recipe (VADER's tweets as language-model documents, optionally prefixed with their rating) on a fake
vaderSentiment sdist in tmp_path, and whole-tweet generation: from <bos> to <eos>, or from a rating prompt."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import CONF, run_pipeline, tar_gz, working_dir

from seqpipe import cli
from seqpipe.config import compose, validate
from seqpipe.data.vocab import BOS_ID, EOS_ID, SUPPRESS
from seqpipe.errors import SeqpipeError
from seqpipe.models.sampling import stream
from seqpipe.recipes import sentiment, tweets

VERSION, MEMBER = "3.3.2", "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
RATINGS = {"1": -3.2, "2": -1.5, "3": 0.1, "4": 1.6, "5": 3.3}  # a mean rating inside each star's bin
WORDS = "so happy today love this sad day awful traffic great game lol work tired fun 1st".split()


def fake_sdist(cache: Path, tweet_lines: str) -> str:
    """vaderSentiment-3.3.2.tar.gz in `cache` (so fetch downloads nothing) with VADER's inner tarball: the given
    tweets file and one row in each other source; returns its sha256."""
    files = {f"hutto_ICWSM_2014/{name}": f"1\t2.0\tNot a tweet from {source}.\n".encode()
             for name, source in sentiment.SOURCES.items()}
    files["hutto_ICWSM_2014/tweets_GroundTruth.txt"] = tweet_lines.encode()
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"vaderSentiment-{VERSION}.tar.gz"
    archive.write_bytes(tar_gz({MEMBER: tar_gz(files)}))
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def tweet_lines(n: int, seed: int = 0) -> str:
    """n made-up tweets, their ratings cycling through the five stars."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rating = RATINGS["12345"[i % 5]]
        rows.append(f"{i + 1}\t{rating}\t{' '.join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))}!")
    return "\n".join(rows) + "\n"


# --- the recipe ------------------------------------------------------------------------------------------------

def test_one_document_per_tweet_and_only_tweets(tmp_path):
    sha = fake_sdist(tmp_path, "1\t2.7\tSo lucky &amp; happy.\r\n\r\n2\t-3.1\tAwful.\r\n")
    docs = tweets.fetch("vaderSentiment", VERSION, sha, MEMBER, str(tmp_path), condition=False)
    assert docs == [{"id": "tweets:1", "text": "So lucky & happy."}, {"id": "tweets:2", "text": "Awful."}]


@pytest.mark.parametrize("stars", sorted(RATINGS))
def test_each_rating_becomes_one_prefix(tmp_path, stars):
    sha = fake_sdist(tmp_path, f"7\t{RATINGS[stars]}\tWhat a day.\n")
    (doc,) = tweets.fetch("vaderSentiment", VERSION, sha, MEMBER, str(tmp_path), condition=True)
    assert doc == {"id": "tweets:7", "text": f"{stars}★ What a day."}
    assert doc["text"].startswith(tweets.marker(stars)) and len(tweets.marker(stars)) == 3  # 3 characters


def test_an_archive_without_tweets_is_refused(tmp_path):
    sha = fake_sdist(tmp_path, "\n")
    with pytest.raises(SeqpipeError, match="holds no tweets"):
        tweets.fetch("vaderSentiment", VERSION, sha, MEMBER, str(tmp_path))


def test_the_recipe_composes_as_a_language_model():
    cfg = compose(["recipe=tweets"], config_dir=CONF)
    validate(cfg)
    assert (cfg.task, cfg.recipe.labels, cfg.recipe.fetch.condition, cfg.evaluate.prompt) == ("lm", None, True, "")
    assert cfg.register.model_name == "seqpipe-tweets"
    source = compose(["recipe=sentiment"], config_dir=CONF).recipe.fetch  # the same pinned archive
    assert all(cfg.recipe.fetch[k] == source[k] for k in ("package", "version", "sha256", "member"))


# --- generation: whole tweets (tiny models trained on a fake corpus) -------------------------------------------

TINY = ["recipe=tweets", "model.embedding_dim=16", "model.hidden_size=32", "model.dropout=0.0",
        "data.batch_size=4", "data.bptt=32", "data.eval_batch_size=2", "optim.lr=0.01", "optim.warmup_steps=0",
        "trainer.max_epochs=2", "train.log_every_n_steps=5", "evaluate.sample_tokens=60",
        "prepare.min_freq=1", "prepare.val_fraction=0.2", "prepare.test_fraction=0.2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny registered tweet models in one store: v1 conditioned on the rating, v2 on the plain tweets."""
    root = tmp_path_factory.mktemp("tweets")
    sha = fake_sdist(root / "downloads", tweet_lines(80))
    store = root / "mlflow.db"
    with working_dir(root):
        for name, condition in (("conditioned", "true"), ("plain", "false")):
            run_pipeline(root / name, [*TINY, f"recipe.fetch.condition={condition}", f"recipe.fetch.sha256={sha}",
                                       f"paths.downloads={root / 'downloads'}"], store=store)
    uri = f"sqlite:///{store}"
    mlflow.set_tracking_uri(uri)
    return {"root": root, "uri": uri, "conditioned": "models:/seqpipe-tweets/1", "plain": "models:/seqpipe-tweets/2"}


def _served(models, which):
    return mlflow.pyfunc.load_model(models[which]).unwrap_python_model()


@pytest.mark.slow
def test_evaluate_samples_one_tweet_from_bos(models):
    sample = (models["root"] / "conditioned" / "reports" / "evaluate" / "sample.txt").read_text()
    assert sample.endswith("\n") and sample.count("\n") == 1  # no newline in the tweets: one line, one tweet
    assert "<bos>" not in sample and "<eos>" not in sample and len(sample) <= 60 + 1


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["", "1★ ", "5★ "])
def test_generate_prints_one_tweet_with_the_prompt_as_its_prefix(models, capsys, prompt):
    for seed in range(3):
        assert cli.main(["generate", "--model", models["conditioned"], "--tracking-uri", models["uri"], "--bos",
                         "--prompt", prompt, "--max-new-tokens", "80", "--seed", str(seed)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(prompt) and out.endswith("\n") and out.count("\n") == 1, out
        assert "<bos>" not in out and "<eos>" not in out and len(out) <= len(prompt) + 80 + 1, out


@pytest.mark.slow
def test_generation_stops_at_eos_and_never_prints_it(models):
    model = _served(models, "conditioned")
    head = model.net.head.bias
    with torch.no_grad():
        head[EOS_ID] = -1e4  # never drawn: generation runs to max_new_tokens
        long = "".join(model.stream("", {"max_new_tokens": 50, "seed": 1}))
        head[EOS_ID] = 1e4  # always drawn: the tweet ends at once, and <eos> itself is not text
        assert "".join(model.stream("", {"max_new_tokens": 50, "seed": 1})) == ""
        assert "".join(model.stream("3★ ", {"max_new_tokens": 50, "seed": 1}, bos=True)) == ""
    assert len(long) == 50 and "<" not in long


@pytest.mark.slow
@pytest.mark.parametrize(("prompt", "bos"), [("1★ ", True), ("1★ ", False), ("", False)])
def test_a_prompt_is_read_after_bos_only_when_asked(models, prompt, bos):
    """--bos reads the prompt as the start of a tweet, as an empty prompt is: the first new token's log-probability
    is the network's after <eos> <bos> + prompt (without it, after the prompt alone, as a Shakespeare prompt is
    read)."""
    model = _served(models, "conditioned")
    ids = model.vocab.encode(list(prompt))
    logprobs: list = []
    list(stream(model.net, model.vocab, model.tokenizer, prompt, 1, temperature=0, logprobs=logprobs, bos=bos))
    starts = bos or not prompt
    with torch.no_grad():
        for fed, expected in (([EOS_ID, BOS_ID, *ids], starts), ([BOS_ID, *ids], False), (ids, not starts)):
            if not fed:
                continue
            logits, _ = model.net(torch.tensor([fed]))
            logits[0, -1, list(SUPPRESS)] = float("-inf")  # never drawn, as in sampling
            best = torch.log_softmax(logits[0, -1], -1).max().item()  # the greedy token's
            assert (abs(logprobs[0][1] - best) < 1e-5) is expected, (fed, logprobs, best)


@pytest.mark.slow
def test_a_rating_prompt_for_a_model_without_ratings_warns_and_generates(models, capsys):
    with pytest.warns(UserWarning, match=r"not in the vocabulary, read as <unk>: \['★'\]"):
        assert cli.main(["generate", "--model", models["plain"], "--tracking-uri", models["uri"], "--bos",
                         "--prompt", "1★ ", "--max-new-tokens", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("1★ ")


@pytest.mark.slow
def test_the_served_model_takes_bos_as_a_param(models):
    """`mlflow models serve` asks for a rated tweet with params {"bos": true}: the same text as `generate --bos`."""
    import pandas as pd

    model = _served(models, "conditioned")
    p = {"max_new_tokens": 30, "temperature": 0.0}
    served = model.predict(None, pd.DataFrame({"prompt": ["5★ "]}), params={**p, "bos": True})["text"][0]
    assert served == "5★ " + "".join(model.stream("5★ ", p, bos=True))
    plain = model.predict(None, pd.DataFrame({"prompt": ["5★ "]}), params=p)["text"][0]
    assert plain == "5★ " + "".join(model.stream("5★ ", p))
    with pytest.raises(Exception, match="bos='yes' must be true or false"):
        model.predict(None, pd.DataFrame({"prompt": ["5★ "]}), params={"bos": "yes"})

"""Speech: eSpeak NG synthesis, the audio front end (any file, rate or channel count in; log-mel frames out; bad
clips named), the speech recipe (held-out voices, every test sentence in every noise condition, frames stored as
arrays), and a small speech model end to end: trained on synthetic clips, registered, and asked to transcribe WAV
files, base64 bytes and sample arrays through the served model and `seqpipe predict`."""

from __future__ import annotations

import base64
import io
import json
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import CONF, run_pipeline

from seqpipe.config import compose
from seqpipe.data import audio
from seqpipe.data.audio import AudioError, clip_frames
from seqpipe.fetch import read_documents, write_documents
from seqpipe.recipes import speech
from seqpipe.recipes.espeak import Synth, speak

REAL = Path("/usr/share/pocketsphinx/test/data")
SPEC = dict(compose(["recipe=speech"], config_dir=CONF).recipe.audio)  # the recipe's front end, from conf/
SAID = "four two seven"


@pytest.fixture(scope="module")
def said() -> tuple[np.ndarray, int]:
    """'four two seven' in a voice the speech recipe holds out, as float samples at eSpeak's 22,050 Hz."""
    (samples,), rate = speak([(SAID, "en-us+m3", 160, 50)])
    return samples.astype(np.float32) / 32768, rate


def test_espeak_speaks_reproducibly_in_fresh_processes_and_voices_differ():
    requests = [("three one four", "en-us", 175, 50), ("three one four", "en-us", 175, 50),
                ("three one four", "en-gb-x-rp+f2", 175, 50), ("three one four", "en-us", 300, 50)]
    first, rate = speak(requests, chunk=4)
    again, _ = speak(requests, chunk=4)
    assert rate == 22050 and all(np.array_equal(a, b) for a, b in zip(first, again))
    a, _, other, fast = first
    assert a.dtype == np.int16 and 0.5 < len(a) / rate < 3
    assert len(other) != len(a) or not np.array_equal(other, a)
    assert len(fast) < 0.8 * len(a)  # faster speech, fewer samples
    with pytest.raises(Exception, match="no voice 'xx-nope'"):
        Synth().say("one", "xx-nope")


# --- the audio front end: what a request may send -------------------------------------------------------------
def wav(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    sf.write(path, samples, rate, subtype=subtype)
    return path


def test_rates_channels_and_sample_formats_give_the_same_frames(said, tmp_path):
    """A 16 kHz mono 16-bit file is the reference; stereo at 48 kHz, 24-bit, float and base64 bytes of the same
    clip give (nearly) the same frames; an array with its rate too."""
    samples, rate = said
    clip = audio.resample(samples, rate, 16000)
    reference = clip_frames(wav(tmp_path / "ref.wav", clip, 16000), SPEC)
    assert reference.shape[1] == 40 and abs(len(reference) - len(clip) / 160) <= 3
    stereo48 = np.stack([audio.resample(samples, rate, 48000)] * 2, axis=1)
    variants = {"stereo 48 kHz": wav(tmp_path / "s48.wav", stereo48, 48000),
                "24-bit": wav(tmp_path / "p24.wav", clip, 16000, "PCM_24"),
                "float": wav(tmp_path / "f32.wav", clip, 16000, "FLOAT"),
                "base64": base64.b64encode((tmp_path / "ref.wav").read_bytes()).decode()}
    for name, source in variants.items():
        got = clip_frames(source, SPEC)
        n = min(len(got), len(reference))
        assert abs(len(got) - len(reference)) <= 1, name
        # dB below the clip's peak: the same clip agrees to a few dB wherever it is not near the floor
        loud = reference[:n] > -50
        assert np.median(np.abs(got[:n] - reference[:n])[loud]) < 1.0, name
    array = clip_frames(samples.tolist(), SPEC, sample_rate=rate)
    assert abs(len(array) - len(reference)) <= 1
    louder = clip_frames(clip * 0.05, SPEC, sample_rate=16000)  # gain does not change the features
    assert np.abs(louder - reference)[reference > -50].max() < 0.5


def test_low_rates_warn_and_clipping_warns(said):
    samples, rate = said
    with pytest.warns(UserWarning, match="8000 Hz audio holds nothing above 4000 Hz"):
        clip_frames(audio.resample(samples, rate, 8000), SPEC, sample_rate=8000)
    with pytest.warns(UserWarning, match=r"of the samples are at full scale \(clipped\)"):
        clip_frames(np.clip(samples * 20, -1, 1), SPEC, sample_rate=rate)
    with warnings.catch_warnings():  # a float file louder than full scale is not clipped: it is only loud
        warnings.simplefilter("error")
        assert len(clip_frames(samples * 30, SPEC, sample_rate=rate)) > 10


def test_silent_and_empty_clips_have_no_frames(tmp_path):
    assert clip_frames(wav(tmp_path / "silent.wav", np.zeros(16000), 16000), SPEC).shape == (0, 40)
    assert clip_frames(np.zeros(0), SPEC, sample_rate=16000).shape == (0, 40)
    assert clip_frames(wav(tmp_path / "empty.wav", np.zeros(0), 16000), SPEC).shape == (0, 40)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("this is not audio\n") and p, r"not-audio\.wav is not a readable audio file"),
    (lambda p: p.parent / "nowhere.wav", r"audio file not found: .*nowhere\.wav"),
    (lambda p: "UklGRiBub3QgYSB3YXY=", r"the base64 audio is not a readable audio file"),  # "RIFF not a wav"
    (lambda p: "bm90IGF1ZGlv", "the audio is neither base64 audio bytes"),  # base64 of "not audio": not a file's
    (lambda p: "%%% not base64 %%%", "the audio is neither base64 audio bytes nor an array of samples"),
    # text is never a path: an existing file, a missing one and /etc/passwd get the same answer, nothing is opened
    (lambda p: p.write_bytes(b"RIFF") and str(p), "the audio is neither base64 audio bytes nor an array of samples"),
    (lambda p: str(p.parent / "nowhere.wav"), "the audio is neither base64 audio bytes nor an array of samples"),
    (lambda p: "/etc/passwd", "the audio is neither base64 audio bytes nor an array of samples"),
    (lambda p: 42, "audio must be base64 text of a WAV, FLAC or OGG file or an array of samples, not int"),
])
def test_unreadable_clips_are_named(tmp_path, make, message):
    with pytest.raises(AudioError, match=message):
        clip_frames(make(tmp_path / "not-audio.wav"), SPEC)


def test_a_ten_minute_file_is_refused_from_its_header(tmp_path):
    """600 s at 8 kHz (9.6 MB): refused before its samples are read, naming the limit."""
    long = wav(tmp_path / "long.wav", np.zeros(8000 * 600, np.int16), 8000)
    with pytest.raises(AudioError, match=r"long\.wav lasts 600\.0 s; this model transcribes at most 60 s per clip "
                                         r"\(serve\.max_audio_seconds"):
        clip_frames(long, SPEC, max_seconds=60)
    raw = tmp_path / "huge.raw"  # 2 GB of headerless PCM (sparse: no disk used), refused from its size unread
    with raw.open("wb") as f:
        f.truncate(2_000_000_000)
    with pytest.raises(AudioError, match=r"huge\.raw lasts 62500\.0 s; this model transcribes at most 60 s"):
        clip_frames(raw, SPEC, max_seconds=60)
    with pytest.raises(AudioError, match="an array of samples needs its sample rate"):
        clip_frames([0.1, 0.2], SPEC)
    with pytest.raises(AudioError, match="audio samples must be finite numbers"):
        clip_frames([0.1, float("nan")], SPEC, sample_rate=16000)


# --- the recipe ---------------------------------------------------------------------------------------------------
SMALL = ["recipe=speech", "recipe.fetch.train_size=40", "recipe.fetch.test_size=6"]


def test_recipe_holds_out_voices_and_hears_each_test_sentence_in_every_condition(tmp_path):
    from hydra.utils import instantiate

    cfg = compose(SMALL, config_dir=CONF)
    docs = instantiate(cfg.recipe.fetch)
    train = [d for d in docs if d["split"] == "train"]
    test = [d for d in docs if d["split"] == "test"]
    assert len(train) == 40 and len(test) == 6 * 4
    assert not {d["group"] for d in train} & {d["group"] for d in test}  # whole voices held out
    assert {d["group"].partition("+")[2] for d in test} <= set(cfg.recipe.fetch.test_voices.variants)
    by_sentence = {}
    for d in test:
        by_sentence.setdefault(d["id"].rsplit("-", 1)[0], []).append(d)
    assert all(sorted(x["source"] for x in rows) == ["clean", "snr10", "snr20", "snr5"]
               for rows in by_sentence.values())
    words = set(speech.DIGITS + speech.RANKS + speech.SUITS + ["of", "go", "forward", "backward", "meter", "meters"])
    assert all(set(d["output"].split()) <= words and d["frames"].shape[1] == 40 for d in docs)
    again = instantiate(cfg.recipe.fetch)  # deterministic per seed
    assert all(np.array_equal(a["frames"], b["frames"]) and a["output"] == b["output"] for a, b in zip(docs, again))
    # noisier conditions of one sentence differ more from the clean one
    rows = {x["source"]: x["frames"] for x in next(iter(by_sentence.values()))}
    gaps = [np.abs(rows[c] - rows["clean"]).mean() for c in ("snr20", "snr10", "snr5")]
    assert gaps == sorted(gaps) and gaps[0] > 0
    # stored as arrays beside documents.jsonl, and read back equal
    write_documents(tmp_path, docs)
    assert (tmp_path / "frames.npz").is_file() and (tmp_path / "documents.jsonl").stat().st_size < 20_000
    back = read_documents(tmp_path)
    assert all(np.array_equal(a["frames"], b["frames"]) and a["output"] == b["output"] for a, b in zip(docs, back))


def test_mixing_reaches_the_asked_snr():
    rng = np.random.default_rng(0)
    clean = np.sin(np.arange(16000) / 5.0).astype(np.float32)
    for snr in (20, 10, 5):
        for colour in ("white", "pink", "brown"):
            noisy = speech.mix(clean, snr, colour, rng)
            measured = 10 * np.log10((clean ** 2).mean() / ((noisy - clean) ** 2).mean())
            assert measured == pytest.approx(snr, abs=0.01)


def test_another_espeak_release_is_refused():
    from seqpipe.errors import SeqpipeError
    from seqpipe.recipes.espeak import check_version

    check_version("0.2.4")
    with pytest.raises(SeqpipeError, match=r"espeakng-loader 0\.2\.4 is installed but the recipe pins 9\.9\.9 .*"
                                           r"pip install espeakng-loader==9\.9\.9"):
        check_version("9.9.9")


def test_voices_in_both_splits_are_refused(tmp_path):
    from seqpipe import fetch
    from seqpipe.errors import SeqpipeError

    cfg = compose([*SMALL, "recipe.fetch.test_voices.variants=[m1]", f"paths.raw={tmp_path}/raw"], config_dir=CONF)
    with pytest.raises(SeqpipeError, match=r"voices \['en.*are in both train_voices and test_voices"):
        fetch.run(cfg)
    assert not (tmp_path / "raw").exists()


@pytest.mark.skipif(not REAL.is_dir(), reason="apt-get install pocketsphinx-testdata")
def test_real_recordings_are_listed_with_their_transcripts():
    clips = speech.real_speech(str(REAL))
    assert len(clips) == 7 and clips[0] == {"id": "cards/001", "audio": str(REAL / "cards/001.wav"),
                                            "output": "ten of clubs"}
    assert {c["id"]: c["output"] for c in clips}["cards/005"] == "eight of spades four of clubs seven of hearts"
    assert all(len(clip_frames(Path(c["audio"]), SPEC)) > 50 for c in clips)  # real speech, 16 kHz, over half a second
    assert speech.real_speech(str(REAL / "nowhere")) == []


# --- end to end -------------------------------------------------------------------------------------------------
# digit strings only, clean and at 20 dB: about 20 s on 2 cores to a test CER near 0.07 (WER 0.24)
TRAIN = [*SMALL[:1], "recipe.fetch.train_size=600", "recipe.fetch.test_size=20", "recipe.fetch.kinds=[digits]",
         "recipe.fetch.snrs=[null,20]", "model.num_layers=1", "model.hidden_size=96", "model.embedding_dim=64",
         "model.dropout=0.0", "optim.lr=0.01", "optim.warmup_steps=20", "data.batch_size=16", "trainer.max_epochs=12",
         "train.patience=20", "evaluate.beam_width=4"]


@pytest.fixture(scope="module")
def speech_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    return root, run_pipeline(root, [*TRAIN, f"paths.downloads={root}/downloads"])


@pytest.mark.slow
def test_speech_model_learns_and_transcribes_audio(speech_model, said, tmp_path, capsys):
    root, out = speech_model
    m = out["metrics"]
    history = pd.read_csv(root / "reports/history.csv")
    losses = history["val/loss"].dropna().tolist()
    print(f"\nspeech (600 digit strings, BiGRU 1x96): val loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
          + ", ".join(f"{k} {v:.4f}" for k, v in sorted(m.items()) if "per_source" not in k))
    assert losses[-1] < 0.3 * losses[0], losses
    assert m["test/cer"] < 0.25 and m["test/wer"] < 0.6  # the empty transcript's CER and WER are 1.0
    assert {"test/per_source/clean/wer", "test/per_source/snr20/wer", "test/per_source/clean/wer_greedy"} <= set(m)
    meta = json.loads((root / "data/prepared/meta.json").read_text())
    assert meta["inputs"]["audio"] == dict(compose(TRAIN, config_dir=CONF).recipe.audio)
    assert 0 <= m["test/wer_lexicon"] <= m["test/wer"]  # a word of the lexicon is never changed
    if REAL.is_dir():
        assert 0 <= m["real/wer"] and 0 <= m["real/wer_lexicon"]
        lines = (root / "reports/evaluate/real_predictions.tsv").read_text().splitlines()
        assert len(lines) == 8 and lines[1].startswith("cards/001\tten of clubs\t")

    mlflow.set_tracking_uri(out["cfg"].mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/seqpipe-speech@champion")
    samples, rate = said
    path = wav(tmp_path / "clip.wav", audio.resample(samples, rate, 16000), 16000)
    stereo = wav(tmp_path / "stereo48.wav", np.stack([audio.resample(samples, rate, 48000)] * 2, 1), 48000)
    silent = wav(tmp_path / "silent.wav", np.zeros(8000), 16000)
    request = pd.DataFrame({"audio": [path.read_bytes(), base64.b64encode(stereo.read_bytes()).decode(),
                                      base64.b64encode(silent.read_bytes()).decode()]})
    answer = model.predict(request, params={"n_best": 3})
    assert answer["text"].iloc[0] == answer["text"].iloc[1]  # the same words at 16 kHz mono and 48 kHz stereo
    from seqpipe.metrics.text import edit_distance

    assert edit_distance(list(answer["text"].iloc[0]), list(SAID)) <= 4, answer["text"].iloc[0]  # of 14 characters
    assert answer["text"].iloc[2] == "" and answer["score"].iloc[2] == 0.0
    assert len(json.loads(answer["n_best"].iloc[0])) == 3
    lexicon = model.unwrap_python_model().meta["target"]["lexicon"]
    assert set(lexicon) == set(speech.DIGITS)  # the words of the train transcripts: digit strings only here
    snapped = model.predict(request, params={"lexicon": True})["text"]
    assert all(set(t.split()) <= set(lexicon) for t in snapped) and snapped.iloc[2] == ""
    arrays = model.predict(pd.DataFrame({"audio": [samples.tolist()], "sample_rate": [rate]}))
    assert arrays["text"].iloc[0] == answer["text"].iloc[0]
    with pytest.raises(Exception, match="row 1: the audio is neither base64 audio bytes nor an array of samples"):
        model.predict(pd.DataFrame({"audio": [path.read_bytes(), str(root / "reports/metrics.json")]}))
    with pytest.raises(Exception, match="n_best=9 must be between 1 and beam_width=4"):
        model.predict(request, params={"n_best": 9})

    # the command line (in this process: its start-up is ~7 s a run): one clip printed, a folder written to a CSV
    from seqpipe.cli import main

    def predict(*args: str) -> tuple[int, str, str]:
        code = main(["predict", "--model", "models:/seqpipe-speech@champion", "--tracking-uri",
                     out["cfg"].mlflow.tracking_uri, *args])
        printed = capsys.readouterr()
        return code, printed.out, printed.err

    capsys.readouterr()  # what the test printed before
    code, printed, err = predict("--audio", str(path))
    assert code == 0 and printed.strip() == answer["text"].iloc[0], err
    code, _, err = predict("--input", str(tmp_path), "--output", str(tmp_path / "out.csv"))
    assert code == 0, err
    table = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert [Path(p).name for p in table["audio"]] == ["clip.wav", "silent.wav", "stereo48.wav"]
    assert table["text"].tolist() == [answer["text"].iloc[0], "", answer["text"].iloc[0]]
    code, _, err = predict("--audio", str(root / "reports/metrics.json"))
    assert code == 2 and "metrics.json is not a readable audio file" in err, err


def test_wav_base64_round_trip():
    tone = (0.5 * np.sin(np.arange(800) / 3)).astype(np.float32)
    data, rate = sf.read(io.BytesIO(base64.b64decode(audio.wav_base64(tone, 8000))), dtype="float32")
    assert rate == 8000 and np.abs(data - tone).max() < 1e-4


@pytest.mark.slow
def test_mlflow_models_serve_transcribes_base64_wav_and_samples_and_refuses_bad_audio(speech_model, said, tmp_path):
    from conftest import models_serve, post_json

    root, out = speech_model
    samples, rate = said
    clip = audio.wav_base64(samples, rate)
    with models_serve("models:/seqpipe-speech@champion", out["cfg"].mlflow.tracking_uri, root) as url:
        body = {"dataframe_split": {"columns": ["audio"], "data": [[clip]]}, "params": {"n_best": 2}}
        status, answer = post_json(f"{url}/invocations", json.dumps(body).encode())
        assert status == 200, answer
        (row,) = answer["predictions"]
        assert row["text"] and len(json.loads(row["n_best"])) == 2 and row["model"] == "seqpipe-speech/1"
        records = [{"audio": samples[::2].tolist(), "sample_rate": rate // 2}]  # 11,025 Hz: a warning, an answer
        status, answer = post_json(f"{url}/invocations", json.dumps({"dataframe_records": records}).encode())
        assert status == 200 and answer["predictions"][0]["text"], answer
        bad = base64.b64encode(b"RIFF not really a wav file").decode()
        status, answer = post_json(f"{url}/invocations", json.dumps(
            {"dataframe_split": {"columns": ["audio"], "data": [[clip], [bad]]}}).encode())
        assert status == 400 and "row 1: the base64 audio is not a readable audio file" in answer["message"], answer

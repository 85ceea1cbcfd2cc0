"""Generation requests bounded before any work: a primer's frames counted (a MIDI file from its note times, a served
JSON primer from its brackets) against the model's limits, and sampling values (temperature, seed) within the ranges
where sampling is defined. The command line and the served model refuse the same things, with one message each
(docs/bad-inputs.md, "Generation bounds")."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from seqpipe.cli import main
from seqpipe.data.music import _vlq, midi_bytes, read_midi
from seqpipe.data.request_checks import RequestError, generation_params
from seqpipe.data.requests import InputError
from seqpipe.data.sampling_bounds import SEED_MAX, TEMPERATURES, check_seed, check_temperature
from seqpipe.errors import SeqpipeError
from seqpipe.serving.pyfunc import SeqpipeModel
from seqpipe.serving.served import LEGACY_LIMITS
from seqpipe.tasks.pianoroll import PianoRoll

LIMITS = {**LEGACY_LIMITS, "max_input_tokens": 100, "max_total_tokens": 150, "max_new_tokens": 32,
          "max_total_new_tokens": 64}
LM = str(Path(__file__).parent / "data" / "models-0.1" / "lm")  # a language model registered by seqpipe 0.1
TEMPERATURE = "must be a number >= 0 (0 = greedy); a sampling temperature is between 0.0001 (all but greedy) and " \
              "10000 (all but uniform)"
SEED = "must be >= 0, or -1 for a fresh seed, and at most 9223372036854775807 (2**63 - 1)"


@pytest.fixture(scope="module")
def roll_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A served piano-roll model (untrained, 40..80) with small limits: 100 primer frames, 32 new frames a row."""
    root = tmp_path_factory.mktemp("roll")
    task, model = PianoRoll(), {"cell": "gru", "hidden_size": 8, "embedding_dim": 4}
    meta = {"task": "pianoroll", "inputs": {"kind": "frames", "features": 41, "mean": [0.0] * 41, "std": [1.0] * 41},
            "target": {"low": 40, "high": 80, "frame": 1.0}, "sources": [""], "max_len": None}
    torch.manual_seed(0)
    net = task.build_net(meta, model)
    torch.save({"meta": meta, "model": model, "state_dict": net.state_dict(), "max_len": None, "limits": LIMITS,
                "decode": {}}, root / "model.pt")
    signature, _ = task.signature(None, meta)  # type: ignore[arg-type]
    mlflow.pyfunc.save_model(str(root / "model"), python_model=SeqpipeModel(), signature=signature,
                             artifacts={"weights": str(root / "model.pt")}, metadata={"task": "pianoroll"},
                             pip_requirements=["torch"])
    return str(root / "model")


def one_long_note(ticks: int = 0x0FFFFFFF) -> bytes:
    """A MIDI file of 37 bytes: middle C held for `ticks` ticks (at most a 4-byte delta time), 1 tick a quarter."""
    track = b"\x00\x90\x3c\x40" + _vlq(ticks) + b"\x80\x3c\x00" + b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 1) + b"MTrk" + struct.pack(">I", len(track)) + track


def generate_cli(capsys: pytest.CaptureFixture, model: str, *args: str) -> tuple[int, str, str]:
    """`seqpipe generate` in-process: (exit status, stdout, stderr); argparse's refusals exit 2 too."""
    capsys.readouterr()
    try:
        code = main(["generate", "--model", model, *args])
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_tiny_midi_file_asking_for_billions_of_frames_is_refused_before_any_frame(tmp_path: Path) -> None:
    path = tmp_path / "long.mid"
    path.write_bytes(one_long_note())
    assert len(path.read_bytes()) == 37
    with pytest.raises(SeqpipeError, match=r"long.mid lasts at least 268435455 frames \(a note ends after 268435455 "
                                           r"quarter notes, 1 a frame\); this model takes a primer of at most 10000 "
                                           r"frames \(serve.max_input_tokens when it was registered\): give a "
                                           r"shorter primer"):
        read_midi(path, 1.0, limit=10_000)
    with pytest.raises(SeqpipeError, match="lasts at least 536870910 frames .* 0.5 a frame"):  # on the model's grid
        read_midi(path, 0.5, limit=10_000)
    path.write_bytes(one_long_note(ticks=100))
    assert read_midi(path, 1.0, limit=100) == [[60]] * 100  # at the limit: read
    path.write_bytes(one_long_note(ticks=101))
    with pytest.raises(SeqpipeError, match="lasts at least 101 frames"):
        read_midi(path, 1.0, limit=100)


def test_cli_refuses_a_primer_over_the_models_limit_and_writes_nothing(roll_model: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "long.mid").write_bytes(one_long_note())
    (tmp_path / "101.mid").write_bytes(midi_bytes([[60, 64]] * 101))
    out = tmp_path / "out" / "x.mid"
    for primer, message in (("long.mid", "lasts at least 268435455 frames"), ("101.mid", "lasts at least 101 frames")):
        code, stdout, err = generate_cli(capsys, roll_model, "--primer", str(tmp_path / primer), "--out", str(out),
                                         "--steps", "4")
        assert code == 2 and stdout == "" and not out.parent.exists(), err
        assert err.startswith("seqpipe: error: ") and message in err and "at most 100 frames" in err
        assert len(err.strip().splitlines()) == 1
    (tmp_path / "100.mid").write_bytes(midi_bytes([[60, 64]] * 100))
    code, stdout, err = generate_cli(capsys, roll_model, "--primer", str(tmp_path / "100.mid"), "--out", str(out),
                                     "--steps", "4", "--seed", "1")
    assert code == 0, err
    assert len(json.loads(out.with_suffix(".json").read_text())) == 104 and out.with_suffix(".png").is_file()


def test_cli_takes_the_servers_step_limits(roll_model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.mid"
    code, _, err = generate_cli(capsys, roll_model, "--steps", "33", "--out", str(out))
    assert code == 2 and "steps=33: this model generates at most 32 frames per request" in err and not out.exists()


@pytest.mark.parametrize("primer,message", [
    ("[" + "[60]," * 10_000_000 + "[60]]", "row 0: 10000001 steps; this model takes at most 100 per row "
                                           "(serve.max_input_tokens)"),
    ([[60]] * 1_000_000, "row 0: 1000000 steps; this model takes at most 100 per row"),
    (json.dumps([[60] * 1_000_000]), "row 0: primer frame 0 lists 1000000 pitches; a frame holds at most 128 (each "
                                     "MIDI pitch 0..127 once)"),
], ids=["json-10M-frames", "list-1M-frames", "frame-of-1M-pitches"])
def test_served_primers_are_counted_before_they_are_built(roll_model: str, primer: object, message: str) -> None:
    model = mlflow.pyfunc.load_model(roll_model)
    with pytest.raises(InputError) as e:
        model.predict(pd.DataFrame({"primer": [primer]}), params={"steps": 2})
    assert message in e.value.message and e.value.get_http_status_code() == 400


def test_served_primers_within_the_limits_are_answered(roll_model: str) -> None:
    model = mlflow.pyfunc.load_model(roll_model)
    primers = [json.dumps([[60, 64, 60]] * 100), [[62]] * 50, ""]
    answer = model.predict(pd.DataFrame({"primer": primers[:2]}), params={"steps": 2, "seed": 3})
    notes = [json.loads(n) for n in answer["notes"]]
    assert [len(n) for n in notes] == [102, 52] and notes[0][0] == [60, 64]
    with pytest.raises(InputError, match=r"the request has 151 input steps in all; this model takes at most 150"):
        model.predict(pd.DataFrame({"primer": [*primers[:2], "[[60]]"]}), params={"steps": 1})


BAD_SAMPLING = [({"temperature": 1e308}, "temperature=1e+308 " + TEMPERATURE),
                ({"temperature": 1e-320}, "temperature=1e-320 " + TEMPERATURE),
                ({"temperature": 10**400}, "temperature=" + str(10**400)[:20]),
                ({"temperature": True}, "temperature=True must be a number >= 0"),
                ({"seed": 2**64}, f"seed={2**64} " + SEED),
                ({"seed": SEED_MAX + 1}, f"seed={SEED_MAX + 1} " + SEED),
                ({"seed": -2}, "seed=-2 " + SEED)]
SAMPLING_IDS = ["temperature-1e308", "temperature-1e-320", "temperature-10**400", "temperature-true", "seed-2**64",
                "seed-2**63", "seed--2"]


@pytest.mark.parametrize("params,message", BAD_SAMPLING, ids=SAMPLING_IDS)
def test_language_models_refuse_sampling_values_outside_the_ranges(params: dict, message: str) -> None:
    with pytest.raises(RequestError) as e:  # the served model answers it as InputError, HTTP 400 (test_pyfunc)
        generation_params(params, LIMITS)
    assert message in str(e.value)


# what MLflow's params schema refuses before the model sees it (temperature is a double): still HTTP 400
SCHEMA = {"temperature-10**400": "Failed to validate type and shape for 'temperature': double (default: 1.0), error: "
                                 "int too large to convert to float",
          "temperature-true": "Can not safely convert `<class 'bool'>` to `DataType.double` for value `True`"}


@pytest.mark.parametrize("params,message", BAD_SAMPLING, ids=SAMPLING_IDS)
def test_music_models_refuse_sampling_values_outside_the_ranges(roll_model: str, params: dict, message: str,
                                                                request: pytest.FixtureRequest) -> None:
    model = mlflow.pyfunc.load_model(roll_model)  # through MLflow's params schema: seed is a long, 2**64 passes it
    message = SCHEMA.get(request.node.callspec.id, message.replace("(0 = greedy)", "(0 = every pitch with p > 0.5)"))
    with pytest.raises(mlflow.exceptions.MlflowException) as e:
        model.predict(pd.DataFrame({"primer": [""]}), params={"steps": 2, **params})
    assert message in e.value.message and e.value.get_http_status_code() == 400
    assert isinstance(e.value, InputError) == (request.node.callspec.id not in SCHEMA)


def test_the_ends_of_the_ranges_sample() -> None:
    """At 0.0001 and 10000 sampling is still defined on float32 logits, suppressed tokens included; 2**63 - 1 seeds."""
    model = mlflow.pyfunc.load_model(LM)
    for temperature in (0, *TEMPERATURES):
        out = model.predict(pd.DataFrame({"prompt": ["KING:"]}),
                            params={"max_new_tokens": 20, "temperature": temperature, "seed": SEED_MAX})
        assert len(out["text"][0]) == len("KING:") + 20
    assert check_temperature(1e-4) == 1e-4 and check_seed(SEED_MAX) == SEED_MAX and check_seed(-1) == -1


def test_music_ends_of_the_ranges_generate(roll_model: str) -> None:
    model = mlflow.pyfunc.load_model(roll_model)
    for temperature in (0, *TEMPERATURES):
        answer = model.predict(pd.DataFrame({"primer": [""]}),
                               params={"steps": 3, "temperature": temperature, "seed": SEED_MAX})
        assert len(json.loads(answer["notes"][0])) == 3


@pytest.mark.parametrize("args,message", [
    (["--temperature", "1e308"], "argument --temperature: temperature=1e+308 " + TEMPERATURE),
    (["--temperature", "1e-320"], "argument --temperature: temperature=1e-320 " + TEMPERATURE),
    (["--seed", str(2**64)], f"argument --seed: seed={2**64} " + SEED),
    (["--seed", str(2**63)], f"argument --seed: seed={2**63} " + SEED),
], ids=["temperature-1e308", "temperature-1e-320", "seed-2**64", "seed-2**63"])
@pytest.mark.parametrize("model", ["lm", "music"])
def test_cli_refuses_sampling_values_outside_the_ranges(model: str, args: list[str], message: str,
                                                        roll_model: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.mid"
    code, stdout, err = generate_cli(capsys, LM if model == "lm" else roll_model, *args, "--out", str(out))
    assert code == 2 and message in err and stdout == "" and not out.exists(), err
    assert [line for line in err.splitlines() if "error:" in line] == [f"seqpipe generate: error: {message}"]


@pytest.mark.parametrize("params, message", [
    ({"temperature": 1e-320}, "temperature=1e-320 must be a number >= 0 (0 = beam search); a sampling temperature"),
    ({"temperature": 1e308}, "temperature=1e+308 must be a number >= 0 (0 = beam search)"),
    ({"seed": 2**64}, f"seed=18446744073709551616 {SEED}"),
    ({"top_k": -1}, "top_k=-1 must be >= 0"),
])
def test_a_served_seq2seq_model_checks_sampling_values_as_the_others_do(params, message):
    from types import SimpleNamespace

    from seqpipe.tasks.seq2seq_eval import decode_params

    model = SimpleNamespace(decode={"beam_width": 2}, limits=LIMITS, meta={})
    with pytest.raises(InputError, match=re.escape(message)):
        decode_params({"max_output_len": 5, **params}, model)
    assert decode_params({"max_output_len": 5, "temperature": 0.5, "seed": SEED_MAX}, model)["seed"] == SEED_MAX

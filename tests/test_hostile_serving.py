"""Hostile requests against real `mlflow models serve` processes of a tiny language model, speech model and chorales
model on 127.0.0.1: paths (absolute, traversal, devices, /proc, missing, existing), huge base64, wrong types,
over-limit rows and audio, deep nesting, extreme params. Every one is answered 4xx with one line, no stack trace and
no server path; the answer to a path never depends on whether it exists; the server stays up and its memory
bounded (docs/serving.md: the security rule)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import clone, models_serve_process, run_pipeline, working_dir

pytestmark = pytest.mark.slow

RSS_GROWTH_MB = 600  # the bound: what the abuse below may add to a server's resident memory (the largest body: 40 MB)
PATHS = ["/etc/passwd", "/etc/shadow", "../../../../../../etc/passwd", "/dev/zero", "/dev/urandom",
         "/proc/self/environ", "/proc/self/cmdline", "/nonexistent/clip.wav", "reports/metrics.json", "~/.bashrc",
         "file:///etc/passwd", "http://127.0.0.1:1/clip.wav"]


@pytest.fixture(scope="module")
def servers(tiny_lm, tmp_path_factory):
    """The three tiny models, trained in seconds, registered in one store and each served on its own port (the
    language model is the session's, conftest.tiny_lm, in a copy of its folder)."""
    from seqpipe.recipes.chorales import cached_parse

    root = clone(tiny_lm["root"], tmp_path_factory.mktemp("hostile") / "project")
    store = root / "mlflow.db"
    (root / "lm").mkdir()  # where its server runs
    cache = root / "downloads"
    cached_parse(1.0, "10.5.1", str(cache), limit=12)
    small = ["model.num_layers=1", "model.hidden_size=16", "model.embedding_dim=8", "trainer.max_epochs=1"]
    with working_dir(root):
        run_pipeline(root / "speech", ["recipe=speech", "recipe.fetch.train_size=40", "recipe.fetch.test_size=6",
                                       "recipe.fetch.kinds=[digits]", "recipe.fetch.snrs=[null]", *small,
                                       f"paths.downloads={cache}", "evaluate.real_speech=null"], store)
        run_pipeline(root / "chorales", ["recipe=chorales", f"paths.downloads={cache}", "recipe.fetch.limit=12",
                                         *small, "data.batch_size=4", "prepare.val_fraction=0.17",
                                         "prepare.test_fraction=0.17", "pianoroll.sample_steps=4"], store)
    uri = f"sqlite:///{store}"
    with contextlib.ExitStack() as stack:
        servers = {name: models_serve_process(f"models:/seqpipe-{registered}@champion", uri, root / name)
                   for name, registered in (("lm", "text_file"), ("speech", "speech"), ("chorales", "chorales"))}
        with ThreadPoolExecutor(len(servers)) as pool:  # the three start at once (each takes ~10 s to answer)
            starts = {name: pool.submit(server.__enter__) for name, server in servers.items()}
        for name, start in starts.items():
            if start.exception() is None:
                stack.push(servers[name])  # stopped on the way out, whichever others failed to start
        served = {}
        for name, start in starts.items():
            url, proc = start.result()
            served[name] = {"url": url, "pid": proc.pid, "rss": rss_mb(proc.pid)}
        yield root, served


def rss_mb(group: int) -> float:
    """The resident memory of every process in a process group (the server and its workers), in MB."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:  # the process group id
                status = (stat.parent / "status").read_text()
                total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return total / 1024


def post(url: str, body: bytes | dict, content_type: str = "application/json") -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def refused(url: str, body: bytes | dict, root: Path, match: str = "", status: int = 400,
            content_type: str = "application/json") -> str:
    """POST a hostile request; assert a 4xx answer of one line with no stack trace and no server path; return the
    message."""
    code, text = post(url, body, content_type)
    assert code == status, (code, text[:500])
    try:
        answer = json.loads(text)
        message = answer["message"]
        assert set(answer) <= {"error_code", "message", "sqlstate", "error_class"}, answer  # no stack_trace
    except json.JSONDecodeError:
        message = text  # MLflow's own plain-text answers (415)
    assert "\n" not in message.strip() and len(message) <= 600, message
    for leak in ("Traceback", 'File "', "site-packages", str(root), os.path.expanduser("~") + "/", "stack_trace"):
        assert leak not in message, (leak, message)
    assert match in message, message
    return message


def opened_by_server(fifo: Path, url: str, body: dict, seconds: float = 3.0) -> bool:
    """Send `body` (which names the FIFO `fifo`) and watch the FIFO: a process that opens it to read makes an
    open for writing that does not block succeed, where it fails (ENXIO) while nothing reads it. A tripwire for any
    open, whoever makes it (Python, libsndfile, numpy)."""
    import threading
    import time

    sent = threading.Thread(target=post, args=(url, body), daemon=True)
    sent.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader
            if not sent.is_alive():
                break
            time.sleep(0.05)
            continue
        os.close(fd)  # a reader: let it go
        return True
    sent.join(timeout=30)
    return False


def split(column: str, rows: list, **extra: object) -> dict:
    return {"dataframe_split": {"columns": [column], "data": [[r] for r in rows]}, **extra}


def flac_b64(seconds: float, rate: int = 16000) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * rate), np.int16), rate, format="FLAC")  # silence: a few hundred bytes
    return base64.b64encode(buffer.getvalue()).decode()


def lying_wav_b64(seconds: int) -> str:
    """A WAV header that claims `seconds` of 16 kHz audio, followed by none."""
    size = seconds * 16000 * 2
    header = (b"RIFF" + (36 + size).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
              + (32000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
              + b"data" + size.to_bytes(4, "little"))
    return base64.b64encode(header).decode()


def test_a_served_speech_model_never_opens_a_path_a_client_names(servers):
    root, s = servers
    url = s["speech"]["url"]
    (root / "speech" / "reports").mkdir(exist_ok=True)
    existing = str(root / "mlflow.db")  # exists on the server, readable by it
    answers = {refused(url, split("audio", [p]), root, "a served model never opens a file path")
               for p in [*PATHS, existing]}
    assert len(answers) == 1, answers  # one message, whether the path exists, is a device or is nothing at all
    # the same through CSV and records, and with a sample_rate beside it
    refused(url, f"audio\n{existing}\n".encode(), root, content_type="text/csv")  # no CSV into AnyType columns
    refused(url, {"dataframe_records": [{"audio": "/etc/passwd", "sample_rate": 16000}]}, root, "never opens")
    fifo = root / "tripwire.wav"  # a named pipe: opening it to read is seen, reading or not
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.DEVNULL)  # the tripwire trips on a reader
    try:
        assert opened_by_server(fifo, url, {}, seconds=10)
    finally:
        reader.wait(timeout=10)
    assert not opened_by_server(fifo, url, split("audio", [str(fifo)]))
    assert not opened_by_server(fifo, s["lm"]["url"], split("prompt", [str(fifo)], params={"max_new_tokens": 2}))
    assert not opened_by_server(fifo, s["chorales"]["url"], split("primer", [str(fifo)]))
    ok, text = post(url, split("audio", [flac_b64(1.0)]))  # the same server still answers real audio
    assert ok == 200 and json.loads(text)["predictions"][0]["text"] == "", text  # silence: an empty transcript


def test_a_served_speech_model_bounds_the_work_before_decoding(servers):
    root, s = servers
    url = s["speech"]["url"]
    refused(url, split("audio", [flac_b64(0.1)] * 300), root, "300 rows in one request; this model takes at most "
            "256 (serve.max_rows)")
    refused(url, split("audio", [flac_b64(61)]), root, "row 0: the clip lasts 61.0 s; this model transcribes at "
            "most 60 s per clip")
    ok, text = post(url, split("audio", [lying_wav_b64(100_000)]))  # a header that claims 28 hours, and no samples:
    assert ok == 200 and json.loads(text)["predictions"][0]["text"] == ""  # libsndfile counts what the file holds
    refused(url, split("audio", [flac_b64(59)] * 11), root, "the request holds 649 s of audio; this model "
            "transcribes at most 600 s per request (serve.max_total_audio_seconds)")
    refused(url, split("audio", ["UklGRg" + "A" * 24_000_002]), root, "row 0: the clip is 18.0 MB of audio; this "
            "model takes at most 16 MB per clip (serve.max_audio_mb")  # valid base64, refused before decoding
    refused(url, b'{"dataframe_split": {"columns": ["audio"], "data": [["' + b"A" * 40_000_000 + b'"]]}}', root,
            "the request is 40.0 MB; this model takes at most 32 MB per request (serve.max_request_mb)", status=413)
    refused(url, {"dataframe_records": [{"audio": [0.0] * (16000 * 61), "sample_rate": 16000}]}, root,
            "row 0: the array of samples lasts 61.0 s")


@pytest.mark.parametrize("body, match", [
    (split("audio", [42]), "audio must be base64 text of a WAV, FLAC or OGG file or an array of samples, not int"),
    (split("audio", [True]), "not bool"),
    (split("audio", [{"path": "/etc/passwd"}]), "not dict"),
    (split("audio", [None]), "not NoneType"),
    (split("audio", ["%%%"]), "neither base64 audio bytes nor an array of samples"),
    (split("audio", [base64.b64encode(b"RIFF not really a wav file").decode()]),
     "row 0: the base64 audio is not a readable audio file"),
    ({"dataframe_records": [{"audio": [0.1, 0.2]}]}, "an array of samples needs its sample rate"),
    ({"dataframe_records": [{"audio": [0.1, 0.2], "sample_rate": "fast"}]}, "sample_rate"),
    ({"dataframe_records": [{"audio": ["a", "b"], "sample_rate": 16000}]}, "audio samples must be numbers"),
    ({"dataframe_records": [{"audio": [[[[0.1]]]], "sample_rate": 16000}]}, "not 4-dimensional"),
    (b'{"dataframe_records": [{"audio": ' + b"[" * 5000 + b"]" * 5000 + b', "sample_rate": 16000}]}', "too deeply"),
    (split("audio", [flac_b64(1)], params={"n_best": 2**64}), ""),
    (split("audio", [flac_b64(1)], params={"beam_width": 10**9}), ""),
    (split("audio", [flac_b64(1)], params={"lexicon": "/etc/passwd"}), ""),
    (b"not json at all", ""),
    (b'{"dataframe_split": ' * 3000, ""),
    (b"[" * 100_000 + b"]" * 100_000, ""),
    ({"nonsense": [1, 2, 3]}, ""),
], ids=["int", "bool", "dict", "null", "not-base64", "not-audio", "no-rate", "bad-rate", "strings", "4-d", "deep",
        "n_best-2^64", "huge-beam", "lexicon-path", "not-json", "cut-json", "deep-json", "no-data"])
def test_a_served_speech_model_refuses_wrong_types_and_nesting_in_one_line(servers, body, match):
    root, s = servers
    refused(s["speech"]["url"], body, root, match)


@pytest.mark.parametrize("body, match", [
    (split("prompt", ["the king"] * 300), "300 rows in one request"),
    (split("prompt", ["the king " * 20_000]), "this model takes at most 10000 per row (serve.max_input_tokens)"),
    (split("prompt", [42]), ""),
    (split("prompt", [["the", "king"]]), ""),
    (b'{"dataframe_records": [{"prompt": ' + b"[" * 900 + b"]" * 900 + b"}]}", ""),
    (split("prompt", ["the"], params={"temperature": 1e308}), "temperature"),
    (split("prompt", ["the"], params={"temperature": 1e-320}), "temperature"),
    (split("prompt", ["the"], params={"temperature": -1.0}), "temperature"),
    (split("prompt", ["the"], params={"temperature": "hot"}), ""),
    (split("prompt", ["the"], params={"seed": 2**64}), ""),
    (split("prompt", ["the"], params={"max_new_tokens": 10**12}), ""),
    (split("prompt", ["the"], params={"top_k": -1}), "top_k"),
    (split("prompt", ["the"] * 10, params={"max_new_tokens": 1000}), "serve.max_total_new_tokens"),
], ids=["rows", "long-prompt", "int", "list", "deep", "temperature-1e308", "temperature-1e-320", "temperature-neg",
        "temperature-str", "seed-2^64", "max-new-tokens", "top-k", "total-new-tokens"])
def test_a_served_language_model_refuses_hostile_requests_in_one_line(servers, body, match):
    root, s = servers
    refused(s["lm"]["url"], body, root, match)


def test_a_served_language_model_reads_a_path_as_text(servers):
    """A prompt that names a file is text to continue, nothing more: the answer is generated text."""
    _, s = servers
    code, text = post(s["lm"]["url"], split("prompt", ["/etc/passwd"], params={"max_new_tokens": 5, "seed": 1}))
    assert code == 200 and "root:" not in text, text


@pytest.mark.parametrize("body, match", [
    (split("primer", ["/etc/passwd"]), "send a JSON list of frames"),
    (split("primer", ["../../etc/passwd.mid"]), "send a JSON list of frames"),
    (split("primer", [42]), ""),
    (split("primer", [json.dumps([[60]] * 20_000)]), ""),
    (split("primer", [json.dumps([list(range(21, 109)) * 2000])]), ""),
    (split("primer", ["[" * 100_000 + "]" * 100_000]), ""),
    (split("primer", [""], params={"steps": 10**9}), "steps"),
    (split("primer", [""], params={"temperature": 1e-320}), "temperature"),
    (split("primer", [""], params={"seed": 2**64}), ""),
    (split("primer", [""], params={"out_of_range": "../../etc"}), "out_of_range"),
    (split("primer", [""] * 300), "300 rows in one request"),
], ids=["path", "traversal", "int", "long-primer", "wide-frame", "deep", "steps", "temperature", "seed", "policy",
        "rows"])
def test_a_served_chorales_model_refuses_hostile_requests_in_one_line(servers, body, match):
    root, s = servers
    refused(s["chorales"]["url"], body, root, match)


def test_every_server_is_up_and_its_memory_bounded_after_the_abuse(servers):
    _, s = servers
    for name, server in s.items():
        with urllib.request.urlopen(f"{server['url']}/ping", timeout=10) as r:
            assert r.status == 200, name
        grown = rss_mb(server["pid"]) - server["rss"]
        print(f"\n{name}: resident memory {server['rss']:.0f} MB at start, {grown:+.0f} MB after the abuse")
        assert grown < RSS_GROWTH_MB, (name, grown)

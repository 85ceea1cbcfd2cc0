"""The served model: an MLflow pyfunc holding weights, prepared/meta.json (task, inputs, labels), the vocabulary for
text inputs, network config and the limits of what one request may ask. The task answers: a language model turns
prompts into generated text; a classifier returns a label with class probabilities; a tagger one tag per position;
a regressor one number per row. Inputs are text, or a `frames` column of T x F nested lists. Every answer names the
model that gave it (`model`, `run_id`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

from seqpipe.data.inputs import kind_of
from seqpipe.data.request_checks import RequestError
from seqpipe.data.requests import InputError
from seqpipe.errors import SeqpipeError
from seqpipe.models.nets import SequenceClassifier, SequenceTagger
from seqpipe.serving import guard as server_guard
from seqpipe.serving.onnx_export import runtime_net
from seqpipe.serving.served import Served, legacy_meta
from seqpipe.tasks import get_task


def identity(model_dir: Path) -> tuple[str, str]:
    """(registered name/version, run id) of a downloaded model. MLflow writes `registered_model_meta` when it
    downloads a model by registry URI (alias resolved to its version), so a server started on @champion keeps
    saying which version it loaded after the alias moves."""
    def read(name: str) -> dict:
        path = model_dir / name
        return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}

    run_id = str(read("MLmodel").get("run_id") or "")
    meta = read("registered_model_meta")
    name = f"{meta['model_name']}/{meta['model_version']}" if meta.get("model_name") else f"run {run_id}"
    return name, run_id


class SeqpipeModel(Served, mlflow.pyfunc.PythonModel):
    """The one served-model class: the network, the input kind that reads requests (seqpipe.data.inputs), and the
    task that answers them (seqpipe.tasks), with what the task loaded for itself in `state`."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        saved = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        meta = saved.get("meta") or legacy_meta(saved)
        self.task = get_task(meta["task"])
        self.load_saved(saved, meta, self.task.build_net)
        self.long_inputs = self.task.long_inputs
        self.kind = kind_of(meta["inputs"])
        self.column, self.unit = self.kind.column(self.task.column), self.kind.unit
        self.vocab, self.tokenizer = self.kind.load(context.artifacts)
        self.state = self.task.load_served(meta)
        self.folder = Path(context.artifacts["weights"]).parents[1]  # the model's folder (MLmodel, requirements)
        self.model, self.run_id = identity(self.folder)
        if server_guard.serving():  # loaded by `mlflow models serve`: one thread a call, bound bodies, one-line
            torch.set_num_threads(threads := server_guard.threads())  # error answers, and the rows of concurrent
            server_guard.install(self.limits)  # requests run together
            runs = "PyTorch"
            if server_guard.runtime() == "onnx" and isinstance(self.net, SequenceClassifier | SequenceTagger):
                self.rows_net, runs = runtime_net(self, threads), "ONNX Runtime"  # what forward_rows runs
            if server_guard.batching():
                self.start_batching()
            print(f"seqpipe: serving {self.model} in {runs}, {threads} thread(s) per network call, "
                  f"{'batching' if self._batcher else 'one request at a time'} (worker {os.getpid()})",
                  file=sys.stderr, flush=True)

    # A DataFrame in and out: MLflow infers no schema from these hints (the signature is logged instead) and, given
    # them, does not warn on every load that predict has none.
    def predict(self, context: object, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """The task's answer to a request. A request the model refuses raises InputError (HTTP 400, one line);
        anything else that goes wrong is logged here and answered without its stack trace (HTTP 500)."""
        try:
            rows = self.task.predict(self, model_input, params)
            return pd.DataFrame([{**row, "model": self.model, "run_id": self.run_id} for row in rows])  # made once
        except MlflowException:
            raise
        except RequestError as e:  # the lean checks' refusal (seqpipe.data.request_checks), as an HTTP 400
            raise InputError(e.reason, e.row) from None
        except SeqpipeError as e:
            raise InputError(str(e)) from None
        except MemoryError:
            raise InputError("the request needs more memory than this server has: send fewer or shorter rows") \
                from None
        except RecursionError:  # a JSON value of the request nested thousands deep
            raise InputError("a value of the request nests too deeply to be read") from None
        except Exception as e:
            server_guard.log.exception("seqpipe: %s failed on a request", self.model)
            raise MlflowException(f"seqpipe: the model could not answer this request ({type(e).__name__}, an "
                                  "internal error logged by the server)", error_code=INTERNAL_ERROR) from e

    def encode(self, model_input: object, what: str) -> tuple[list[torch.Tensor], list[float] | None]:
        """Every row of a request as the network's input, read by the input kind and checked against the limits
        before any work, then fitted to the training data's max_len by the task's policy; and, for text, the share
        of each row's tokens that the vocabulary does not know."""
        xs, unk = self.kind.read(self, model_input, what)
        return self.fit_length(xs), unk


# Models registered by the first walking-skeleton builds pickled this name; it loads them with today's code.
LanguageModel = SeqpipeModel

"""The served model: an MLflow pyfunc that holds weights, vocabulary and network config, and turns
prompt strings into generated text."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd
import torch

PARAMS = {"max_new_tokens": 200, "temperature": 1.0, "top_k": 0, "seed": -1}  # seed -1: a fresh seed per call


def prompts_from(model_input: object) -> list[str]:
    """Prompts from a DataFrame (column `prompt`, else the first), a list, a dict or a string."""
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] == 0:
            raise ValueError("the input has no columns: send a column named 'prompt'")
        col = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
        values = model_input[col].tolist()
    elif isinstance(model_input, dict):
        values = model_input.get("prompt", [])
        values = [values] if isinstance(values, str) else list(values)
    elif isinstance(model_input, str):
        values = [model_input]
    else:
        values = list(model_input)  # type: ignore[call-overload]
    if not all(isinstance(v, str) for v in values):
        raise ValueError("every prompt must be a string")
    return values


class LanguageModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from seqpipe.nets import build_net
        from seqpipe.tokenize import load_tokenizer
        from seqpipe.vocab import Vocab

        saved = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.net = build_net(saved["vocab_size"], **saved["model"])
        self.net.load_state_dict(saved["state_dict"])
        self.net.eval()
        self.vocab = Vocab.load(context.artifacts["vocab"])
        self.tokenizer = load_tokenizer(self.vocab.tokenizer)

    # No type hints on predict: MLflow would read them as an input schema; the signature is logged instead.
    def predict(self, context, model_input, params=None):  # noqa: ANN001
        from seqpipe.sampling import complete

        p = {**PARAMS, **(params or {})}
        if int(p["max_new_tokens"]) < 0:
            raise ValueError("max_new_tokens must be >= 0")
        return [complete(self.net, self.vocab, self.tokenizer, prompt, int(p["max_new_tokens"]),
                         float(p["temperature"]), int(p["top_k"]), int(p["seed"]))
                for prompt in prompts_from(model_input)]

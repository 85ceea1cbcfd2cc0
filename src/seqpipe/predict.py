"""Load a registered model (`models:/name@alias` or `models:/name/version`) and generate from it."""

from __future__ import annotations

import re

from seqpipe.errors import SeqpipeError

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def describe_registry(client: object, name: str) -> str:
    """What the registry holds under `name`: its versions and aliases, for error messages."""
    model = client.get_registered_model(name)  # type: ignore[attr-defined]
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))  # type: ignore
    aliases = ", ".join(f"@{a} -> v{v}" for a, v in sorted(model.aliases.items())) or "none"
    return f"versions: {', '.join(map(str, versions)) or 'none'}; aliases: {aliases}"


def check_model_uri(uri: str) -> None:
    """Raise a message listing what exists when `uri` names a model, version or alias that does not."""
    import mlflow
    from mlflow.exceptions import MlflowException

    m = _URI.match(uri)
    if not m:
        return  # runs:/ or a local path: let MLflow report on it
    client = mlflow.MlflowClient()
    name = m["name"]
    try:
        client.get_registered_model(name)
    except MlflowException:
        names = sorted(r.name for r in client.search_registered_models())
        raise SeqpipeError(f"no registered model named {name!r} in {mlflow.get_tracking_uri()}; "
                           f"registered models: {', '.join(names) or 'none'}") from None
    try:
        if m["alias"]:
            client.get_model_version_by_alias(name, m["alias"])
        else:
            client.get_model_version(name, m["version"])
    except MlflowException:
        what = f"alias @{m['alias']}" if m["alias"] else f"version {m['version']}"
        raise SeqpipeError(f"model {name!r} has no {what}; {describe_registry(client, name)}") from None


def generate(model_uri: str, prompts: list[str], tracking_uri: str, **params: object) -> list[str]:
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(tracking_uri)
    check_model_uri(model_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    return model.predict(pd.DataFrame({"prompt": prompts}), params=params)

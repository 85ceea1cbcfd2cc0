"""`seqpipe export`: a registered model's network as ONNX (optionally int8), checked against PyTorch on a fixed
input before anything is written where it stays, then logged beside the model version (its run's artifacts under
export/, and a version tag naming them)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import mlflow

from seqpipe.cli.predict import load_model
from seqpipe.errors import SeqpipeError
from seqpipe.serving.onnx_export import OnnxNet, check_parity, export_model

TOLERANCE = {None: 1e-4, "int8": None}  # int8 changes the logits by design: its agreement is reported, not asserted


def run(model_uri: str, tracking_uri: str, fmt: str, quantize: str | None, out: str | None) -> Path:
    if fmt != "onnx":
        raise SeqpipeError(f"--format {fmt}: the one export format is onnx")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SeqpipeError("ONNX export needs onnx and onnxruntime: pip install 'seqpipe[onnx]'") from None
    model = load_model(model_uri, tracking_uri, None)
    served = model.unwrap_python_model()  # type: ignore[attr-defined]
    name = served.model.replace("/", "-v") if "/" in served.model else "model"
    kind = f"onnx{'-int8' if quantize else ''}"  # the folder's, the artifact path's and (dotted) the tag's suffix
    target = Path(out or Path("exports") / f"{name}-{kind}")
    if target.exists() and any(target.iterdir()):
        raise SeqpipeError(f"{target} exists and is not empty: give another --out, or remove it first")
    with tempfile.TemporaryDirectory(prefix=".export-", dir=target.parent if target.parent.exists() else None) as tmp:
        folder = Path(tmp) / "out"
        export_model(served, folder, quantize)
        try:  # a float export that disagrees is refused before anything is written where it stays
            report = check_parity(served.net, OnnxNet(folder), TOLERANCE[quantize])
        except SeqpipeError as e:
            raise SeqpipeError(f"{e}; nothing was written") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.rmdir()
        shutil.move(str(folder), target)  # whole, or not at all
    graphs = sorted(target.glob("*.onnx"))  # a sequence-to-sequence model's encoder and decoder
    size = sum(g.stat().st_size for g in graphs) / 1e6
    print(f"export: {served.model} -> {', '.join(str(g) for g in graphs)} ({size:.2f} MB); {report}",
          file=sys.stderr)
    if "/" in served.model and served.run_id:  # a registered version: its run keeps the export, the version names it
        registered, version = served.model.rsplit("/", 1)
        path, tag = f"export/v{version}-{kind}", f"export.{kind.replace('-', '.')}"
        client = mlflow.MlflowClient()
        client.log_artifacts(served.run_id, str(target), path)
        client.set_model_version_tag(registered, version, tag, f"runs:/{served.run_id}/{path}")
        print(f"export: logged to run {served.run_id} as {path} (tag {tag} on {registered} v{version})",
              file=sys.stderr)
    return target

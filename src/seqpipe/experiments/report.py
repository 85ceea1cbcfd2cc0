"""`seqpipe report`: each recipe trained with its shipped defaults, scored on its test split and set beside its
published anchor, in one regenerated table (docs/results.md, the README's Results section, a plot).

The rows are conf/report.yaml. A row runs fetch, prepare, train and evaluate (the DVC stages' own `run(cfg)`) in its
own process and work folder (`<work>/<row>/`; downloads are shared with the pipeline's cache), tracked as an MLflow
run like any training; nothing is registered. What a row measured goes to `<results>/<row>.json` (plain git, small),
so rows can run one at a time and the table is always made from every row's latest figures. `--quick` trains each
row for a few batches: it checks that every row's path runs (CI), and its figures are marked as such and never
written over full ones.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import OmegaConf

from seqpipe.atomic import atomic_path, write_json
from seqpipe.config import compose, conf_dir, validate
from seqpipe.errors import SeqpipeError

ROW_KEYS = {"recipe", "overrides", "metric", "label", "percent", "lower_is_better", "anchor", "goal", "ours_split",
            "baseline", "needs", "gpu", "quick", "also"}
BASELINES = ("bow_logreg",)
START, END = "<!-- report:start (seqpipe report writes this part) -->", "<!-- report:end -->"


def load_spec(path: str | Path | None = None) -> dict:
    """conf/report.yaml (or `path`), checked: every row names a recipe that exists, a metric and an anchor."""
    path = Path(path) if path else conf_dir() / "report.yaml"
    if not path.is_file():
        raise SeqpipeError(f"no report spec at {path}: `seqpipe report` reads conf/report.yaml (or --spec FILE)")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    rows = spec.get("rows") or {}
    if not isinstance(rows, dict) or not rows:
        raise SeqpipeError(f"{path}: `rows` must map row names to rows (recipe, metric, anchor); see conf/report.yaml")
    recipes = {p.stem for p in (conf_dir() / "recipe").glob("*.yaml")}
    for name, row in rows.items():
        where = f"{path}: row {name!r}"
        unknown = set(row) - ROW_KEYS
        if unknown:
            raise SeqpipeError(f"{where} has unknown keys {sorted(unknown)}; a row takes: "
                               f"{', '.join(sorted(ROW_KEYS))}")
        if row.get("recipe") not in recipes:
            raise SeqpipeError(f"{where}: recipe {row.get('recipe')!r} is not in conf/recipe/ "
                               f"({', '.join(sorted(recipes))})")
        if not isinstance(row.get("metric"), str) or "/" not in row["metric"]:
            raise SeqpipeError(f"{where}: metric must be a key of the evaluate stage's metrics.json, e.g. test/acc")
        anchor = row.get("anchor")
        if not isinstance(anchor, dict) or not {"value", "source", "split"} <= set(anchor):
            raise SeqpipeError(f"{where}: anchor must give value (null if none), source and split")
        if row.get("baseline") not in (None, *BASELINES):
            raise SeqpipeError(f"{where}: baseline {row['baseline']!r} is not one of: {', '.join(BASELINES)}")
        also = row.get("also")
        if also is not None and (not isinstance(also, dict) or set(also) != {"metric", "label", "about"}
                                 or not isinstance(also["metric"], str) or "/" not in also["metric"]):
            raise SeqpipeError(f"{where}: also must give metric (another key of metrics.json, e.g. test/wer), label "
                               "and about (what differs from the row's own figure)")
    spec["rows"] = rows
    spec.setdefault("quick_overrides", [])
    return spec


def pick_rows(spec: dict, names: str | None) -> list[str]:
    if not names:
        return list(spec["rows"])
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in spec["rows"]]
    if unknown:
        raise SeqpipeError(f"no report row called {', '.join(map(repr, unknown))}; the rows are: "
                           f"{', '.join(spec['rows'])}")
    return chosen


def row_overrides(spec: dict, name: str, quick: bool, work: Path, tracking_uri: str) -> list[str]:
    """The Hydra overrides of one row: its recipe and overrides, --quick's budget, its own work folder and store."""
    row = spec["rows"][name]
    folder = work / name
    return [f"recipe={row['recipe']}", *row.get("overrides", []),
            *((spec["quick_overrides"] + row.get("quick", [])) if quick else []),
            *(f"paths.{k}={folder / k}" for k in ("raw", "prepared", "models", "reports")),
            f"mlflow.tracking_uri={tracking_uri}"]


def hardware() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cores, threads = os.cpu_count() or 1, torch.get_num_threads()
    used = f"; {threads} torch thread{'s' * (threads > 1)}" if threads < cores else ""  # a row run beside another
    return f"{cores} CPU cores ({platform.machine()}{used}), {gpu}, torch {torch.__version__}"


def bow_logreg(prepared: Path) -> float:
    """Test accuracy of a bag-of-words logistic regression (tf-idf of the prepared token ids, C picked on the
    validation split) on the same prepared split the network saw."""
    import numpy as np
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    def split(name: str):  # noqa: ANN202
        with np.load(prepared / f"{name}.npz") as z:
            x, offsets, y = z["x"].astype(np.int64), z["offsets"], z["targets"]
        return csr_matrix((np.ones(len(x)), x, offsets), shape=(len(offsets) - 1, width)), y

    width = len(json.loads((prepared / "vocab.json").read_text(encoding="utf-8"))["tokens"])
    (xtr, ytr), (xva, yva), (xte, yte) = split("train"), split("val"), split("test")
    tfidf = TfidfTransformer(sublinear_tf=True).fit(xtr)
    xtr, xva, xte = tfidf.transform(xtr), tfidf.transform(xva), tfidf.transform(xte)
    best = max((LogisticRegression(C=c, max_iter=2000).fit(xtr, ytr) for c in (0.3, 1.0, 3.0, 10.0)),
               key=lambda m: m.score(xva, yva))
    return float(best.score(xte, yte))


def exit_with_parent(parent: int, every_s: float = 1.0, run_file: Path | None = None,
                     tracking_uri: str | None = None) -> threading.Thread:
    """A row's process stops when the `seqpipe report` that started it is gone (killed, even with SIGKILL, which
    leaves no chance to stop it), instead of training on unseen for half an hour beside whatever runs next. The MLflow
    run its training had started (`run_file`: the train stage's models/run.json) is ended as KILLED, not left
    RUNNING."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        print(f"report: the seqpipe report process ({parent}) is gone; this row stops", file=sys.stderr)
        if run_file is not None:
            end_run_as_killed(run_file, tracking_uri)
        os._exit(1)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def end_run_as_killed(run_file: Path, tracking_uri: str | None) -> str | None:
    """End the MLflow run that `run_file` names as KILLED if it is still RUNNING (a row stopped mid-training); its
    id, or None when there was none to end. Never raises: the process is on its way out, and a store that does not
    answer within seconds leaves the run as it was."""
    from seqpipe.tracking.runs import end_if_running

    with contextlib.suppress(Exception):
        run_id = json.loads(run_file.read_text()).get("run_id")
        if run_id and end_if_running(run_id, "KILLED", tracking_uri):
            print(f"report: MLflow run {run_id} ended as KILLED", file=sys.stderr)
            return run_id
    return None


def _train_row(job: dict) -> dict:
    """In a fresh process: the row's stages, as `dvc repro` runs them, then its figures."""
    from seqpipe import evaluate, fetch, prepare, train

    cfg = compose(job["overrides"])
    exit_with_parent(job["parent"], run_file=Path(cfg.paths.models) / "run.json", tracking_uri=job["tracking_uri"])
    validate(cfg)
    paths = {k: Path(v) for k, v in cfg.paths.items()}
    times = {}
    for stage in (fetch, prepare, train, evaluate):
        t = time.perf_counter()
        stage.run(cfg)
        times[stage.__name__.rsplit(".", 1)[-1]] = round(time.perf_counter() - t, 1)
    metrics = json.loads((paths["reports"] / "metrics.json").read_text())
    trained = json.loads((paths["reports"] / "train.json").read_text())
    row = job["row"]
    for metric in (row["metric"], *([row["also"]["metric"]] if row.get("also") else [])):
        if metric not in metrics:
            raise SeqpipeError(f"row {job['name']!r}: metrics.json has no {metric!r}; it has: "
                               f"{', '.join(sorted(metrics))}")
    result = {"row": job["name"], "recipe": row["recipe"], "metric": row["metric"], "value": metrics[row["metric"]],
              "quick": job["quick"], "overrides": job["overrides"][:1 + len(row.get("overrides", []))],
              "run_id": trained["run_id"], "tracking_uri": job["tracking_uri"], "experiment": cfg.mlflow.experiment,
              "epochs": trained.get("epochs"), "steps": trained.get("steps"), "fit_seconds": trained.get("fit_seconds"),
              "stage_seconds": times, "wall_seconds": round(sum(times.values()), 1), "hardware": hardware(),
              "date": datetime.now(UTC).strftime("%Y-%m-%d"), "commit": _commit()}
    if row.get("also"):  # the same run's figure on another metric, e.g. g2p's WER with stress digits
        result["also"] = {**row["also"], "value": metrics[row["also"]["metric"]]}
    if row.get("baseline") == "bow_logreg":
        result["baseline"] = {"name": "bag-of-words logistic regression (tf-idf, C on val)",
                              "value": bow_logreg(paths["prepared"])}
    return result


def _commit() -> str | None:
    """The checkout's commit, with `+changes` when src/ or conf/ differ from it (what the row really ran)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "conf"], capture_output=True, text=True,
                               timeout=10)
    except OSError:
        return None
    sha = head.stdout.strip()
    return f"{sha}{'+changes' if dirty.stdout.strip() else ''}" if sha else None


def run(names: str | None = None, quick: bool = False, spec_path: str | None = None,
        work: str = "outputs/report", results: str = "reports/results", out: str = "docs/results.md",
        readme: str | None = "README.md", tracking_uri: str | None = None) -> dict:
    """Train the chosen rows one after another (each in its own process), keep each row's figures in
    `results/<row>.json`, then write the table from every row's latest figures."""
    spec = load_spec(spec_path)
    chosen = pick_rows(spec, names)
    work_dir, results_dir = Path(work).resolve(), Path(results)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or compose([]).mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # the same store from the row's process
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    failed = {}
    for i, name in enumerate(chosen, 1):
        overrides = row_overrides(spec, name, quick, work_dir, uri)
        print(f"report: row {i}/{len(chosen)} {name}: seqpipe train {' '.join(overrides[:-5])}"
              f"{' (quick)' if quick else ''}", file=sys.stderr)
        job = {"name": name, "row": spec["rows"][name], "overrides": overrides, "quick": quick, "tracking_uri": uri,
               "parent": os.getpid()}
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            try:
                result = pool.submit(_train_row, job).result()
            except SeqpipeError as e:
                failed[name] = str(e)
                print(f"report: row {name} did not run: {e}", file=sys.stderr)
                continue
        path = results_dir / f"{name}{'.quick' if quick else ''}.json"
        write_json(path, result)
        print(f"report: row {name}: {spec['rows'][name]['metric']} = {result['value']:.4f} "
              f"({result['wall_seconds']} s, MLflow run {result['run_id']})", file=sys.stderr)
    files = render(spec, results_dir, Path(out), Path(readme) if readme else None, quick=quick, failed=failed)
    return {"rows": chosen, "failed": failed, "files": [str(f) for f in files]}


def load_results(spec: dict, results_dir: Path, quick: bool) -> dict[str, dict]:
    """Each row's latest figures: the full run's, or with `quick` the quick run's where there is one."""
    found = {}
    for name in spec["rows"]:
        for suffix in ((".quick", "") if quick else ("",)):
            path = results_dir / f"{name}{suffix}.json"
            if path.is_file():
                found[name] = json.loads(path.read_text())
                break
    return found


def shown(row: dict, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if row.get("percent") else f"{value:.3f}"


def reached(row: dict, value: float, target: float) -> bool:
    """At or past the target. Equal within float32's precision counts: torchmetrics logs 39 of 50 right as
    0.77999997, which is the goal 0.78."""
    if math.isclose(value, target, rel_tol=1e-6):
        return True
    return value <= target if row.get("lower_is_better") else value >= target


def budget_text(res: dict) -> str:
    """Epochs, wall time (fetch to evaluate) and the machine of one row's run."""
    secs = res["wall_seconds"]
    wall = f"{secs:.0f} s" if secs < 120 else f"{secs / 60:.0f} min"
    epochs = res.get("epochs")
    about = f"{epochs:g} epoch{'' if epochs == 1 else 's'}, " if epochs is not None else ""
    return f"{about}{wall}, {res['hardware'].split(',')[0]}"


def table(spec: dict, results: dict[str, dict], failed: dict[str, str]) -> list[str]:
    lines = ["| row | metric | ours | anchor | anchor's source and split | reached | budget | MLflow run |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in spec["rows"].items():
        res, anchor = results.get(name), row["anchor"]
        target = row.get("goal", anchor["value"])
        source = f"{anchor['source']}; {anchor['split']}" + (f" (ours: {row['ours_split']})"
                                                             if row.get("ours_split") else "")
        if res is None:
            why = failed.get(name) or (f"needs {row['needs']}" if row.get("needs") else "")
            lines.append(f"| {name} | {row.get('label', row['metric'])} | not run yet{': ' + why if why else ''} | "
                         f"{shown(row, anchor['value'])} | {source} | - | - | `seqpipe report --rows {name}` |")
            continue
        value, against = res["value"], "goal"
        if target is None and res.get("baseline"):
            target, against = res["baseline"]["value"], "baseline"
        verdict = "-" if target is None else ("yes" if reached(row, value, target) else "no") + \
            (f" ({against} {shown(row, target)})" if target != anchor["value"] else "")
        if row.get("gpu") and anchor["value"] is not None and not reached(row, value, anchor["value"]):
            verdict += f"; on a GPU: `{' '.join(row['gpu'])}`"  # the configuration meant for the anchor
        budget = budget_text(res)
        quick = " (quick)" if res.get("quick") else ""
        lines.append(f"| {name} | {row.get('label', row['metric'])} | **{shown(row, value)}**{quick} | "
                     f"{shown(row, anchor['value'])} | {source} | {verdict} | {budget} | "
                     f"`{res['run_id'][:12]}` ({res['date']}) |")
        if res.get("also"):
            a = res["also"]
            lines.append(f"| {name}: {a['label']} | {a['metric']} | {shown(row, a['value'])} | | {a['about']} | | | |")
        if res.get("baseline"):
            b = res["baseline"]
            lines.append(f"| {name}: baseline | {row.get('label', row['metric'])} | {shown(row, b['value'])} | | "
                         f"{b['name']}, the same prepared split | | | |")
    return lines


def plot(spec: dict, results: dict[str, dict], path: Path) -> Path | None:
    """Our figure as a fraction of the anchor's, one bar a row (1 = the anchor; over 1 = better than it)."""
    rows = [(n, r, results[n]["value"]) for n, r in spec["rows"].items() if n in results and r["anchor"]["value"]]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [(a / v if v else 0.0) if r.get("lower_is_better") else v / a
              for _, r, v in rows for a in [r["anchor"]["value"]]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ax.barh([n for n, _, _ in rows], ratios, color=["tab:green" if x >= 1 else "tab:orange" for x in ratios])
    ax.axvline(1.0, color="black", lw=1)
    ax.invert_yaxis()
    ax.set_xlabel("ours / anchor (lower-is-better metrics: anchor / ours); 1 = at the anchor")
    ax.set_title("seqpipe's recipes against their published anchors")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _replace_between(text: str, body: str) -> str:
    if START in text and END in text:
        head, rest = text.split(START, 1)
        return head + START + "\n" + body + "\n" + END + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + START + "\n" + body + "\n" + END + "\n"


def render(spec: dict, results_dir: Path, out: Path, readme: Path | None, quick: bool = False,
           failed: dict[str, str] | None = None) -> list[Path]:
    """The table (and plot) from every row's latest figures, between the markers of `out` and of the README."""
    results = load_results(spec, results_dir, quick)
    lines = table(spec, results, failed or {})
    image = plot(spec, results, out.parent / "results.png")
    body = "\n".join(["Regenerated by `seqpipe report` (conf/report.yaml; one row: `seqpipe report --rows NAME`). "
                      "Each row is the recipe's shipped defaults on this project's CPU machine unless its budget "
                      "says otherwise; \"reached\" compares with the goal where one is set, else with the anchor "
                      "(or the baseline when there is no published figure).", "", *lines,
                      *(["", f"![ours against the anchors]({image.name})"] if image else [])])
    text = out.read_text() if out.is_file() else "# Results\n"
    with atomic_path(out) as tmp:
        Path(tmp).write_text(_replace_between(text, body))
    files = [out, *([image] if image else [])]
    if readme is not None and readme.is_file():
        link = os.path.relpath(out, readme.parent)
        short = [ln.replace(f"({image.name})", f"({os.path.relpath(image, readme.parent)})") if image else ln
                 for ln in lines]
        with atomic_path(readme) as tmp:
            Path(tmp).write_text(_replace_between(readme.read_text(), "\n".join(
                [f"From [{link}]({link}) (`seqpipe report`):", "", *short])))
        files.append(readme)
    return files

"""A study's outputs: results.csv and results.md (one row per run, and what the rows say), test_loss.png (a bar per
cell), val_loss.png (the loss against training steps) and gradient_flow.png (each cell's profile, last epoch), with a
panel per sequence length when the study ran several."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from seqpipe.atomic import atomic_path, write_text
from seqpipe.models.gradflow import plot_profile

BASELINE = "test/mean_baseline_loss"  # a task's "always predict the train mean" figure (regression), when it has one


def grad_ratio(row: dict) -> tuple[int, float] | tuple[None, None]:
    """(K, ||dL/dh|| at K steps back / at the last step) for the farthest K of the last epoch's profile."""
    flow = row["flow_last"]
    return (len(flow) - 1, flow[-1] / flow[0]) if len(flow) > 1 and flow[0] > 0 else (None, None)


def groups(rows: list[dict]) -> dict[int | None, list[dict]]:
    out: dict[int | None, list[dict]] = {}
    for row in rows:
        out.setdefault(row["length"], []).append(row)
    return out


def metric_keys(rows: list[dict]) -> list[str]:
    keys = sorted({k for r in rows for k in r["metrics"]} - {"test/loss"})
    return ["test/loss", *keys]


def results_csv(rows: list[dict], reference_params: int) -> str:
    keys = metric_keys(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["length", "cell", "hidden_size", "params", "params_vs_reference", *keys, "best_val_loss", "epochs",
                "steps", "fit_seconds", "grad_k", "grad_ratio", "run_id"])
    for r in rows:
        k, ratio = grad_ratio(r)
        w.writerow([r["length"] or "", r["cell"], r["hidden_size"], r["params"],
                    f"{r['params'] / reference_params - 1:+.4f}", *(r["metrics"].get(m, "") for m in keys),
                    r["best_val_loss"], r["epochs"], r["steps"], r["fit_seconds"], "" if k is None else k,
                    "" if ratio is None else f"{ratio:.4g}", r["run_id"]])
    return buf.getvalue()


def _g(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _times(x: float) -> str:
    return f"{x:,.0f}x" if x >= 100 else f"{x:.3g}x"


def comparison(rows: list[dict]) -> str:
    """What one group of runs says: the order by test loss, against Chung et al. (2014), against the baseline."""
    ranked = sorted(rows, key=lambda r: r["metrics"]["test/loss"])
    lines = ["Lowest test loss first: " + ", ".join(f"{r['cell']} {_g(r['metrics']['test/loss'])}" for r in ranked)
             + "."]
    loss = {r["cell"]: r["metrics"]["test/loss"] for r in rows}
    gated = [c for c in ("gru", "lstm") if c in loss]
    if "rnn" in loss and gated:
        best = min(gated, key=loss.get)
        ahead = sum(loss[c] < loss["rnn"] for c in gated)
        who = "every gated cell is" if ahead == len(gated) else "only one gated cell is" if ahead else \
            "no gated cell is"
        text = (f"Chung et al. (2014) found the gated units (GRU, LSTM) ahead of the tanh RNN, and close to each "
                f"other. Here {who} ahead of the tanh RNN (its test loss is {_times(loss['rnn'] / loss[best])} the "
                f"{best}'s)")
        if len(gated) == 2:
            text += f"; GRU / LSTM test loss = {loss['gru'] / loss['lstm']:.3g}"
        lines.append(text + ".")
    if baseline := rows[0]["metrics"].get(BASELINE):
        beat = [r["cell"] for r in ranked if r["metrics"]["test/loss"] < baseline / 10]
        lines.append(f"Predicting the train mean scores {_g(baseline)}; below a tenth of that: "
                     f"{', '.join(beat) or 'none'}.")
    return " ".join(lines)


def results_md(rows: list[dict], about: dict) -> str:
    keys = metric_keys(rows)
    lengths = any(r["length"] for r in rows)
    budget = ", ".join(f"trainer.{k}={v}" for k, v in about["budget"].items() if v is not None)
    out = [f"# Study {about['study']}: tanh RNN, GRU and LSTM with matched parameter counts", "",
           f"`seqpipe study {about['study'].split('-')[0]} {' '.join(about['overrides'])}`. Each run: {budget}; "
           f"{about['parallel']} at a time, {about['threads']} torch thread{'s' * (about['threads'] > 1)} each; "
           f"{len(rows)} runs in "
           f"{about['wall_seconds']} s. MLflow: experiment `{about['experiment']}`, parent run `study-"
           f"{about['study']}` ({about['parent_run']}), one child run per row; no model registered.", "",
           f"Parameters are matched to the {about['reference']} at hidden size {about['reference_hidden']} "
           f"({about['reference_params']:,}): each cell has the hidden size whose network has the nearest count. "
           "The last column is the gradient of the last step's loss reaching the farthest step (k = K steps back), "
           "relative to the last step, measured on the first validation batch after the last epoch.", ""]
    head = [*(["T"] if lengths else []), "cell", "hidden", "parameters", *keys, "best val/loss", "epochs", "steps",
            "train s", "grad k=K / k=0"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        k, ratio = grad_ratio(r)
        cells = [*([str(r["length"])] if lengths else []), r["cell"], str(r["hidden_size"]), f"{r['params']:,}",
                 *(_g(r["metrics"].get(m, "")) for m in keys), _g(r["best_val_loss"]), str(r["epochs"]),
                 f"{r['steps']:,}", f"{r['fit_seconds']:.0f}", "" if ratio is None else f"{ratio:.2g} (K={k})"]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    for length, group in groups(rows).items():
        out += [f"{f'**T = {length}**: ' if length else ''}{comparison(group)}", ""]
    out += ["![test loss](test_loss.png)", "", "![loss against training steps](val_loss.png) "
            "![gradient flow](gradient_flow.png)", ""]
    return "\n".join(out)


COLORS = {"rnn": "tab:red", "gru": "tab:blue", "lstm": "tab:green"}


def _color(cell: str, i: int) -> str:
    return COLORS.get(cell, f"C{4 + i}")


def _panels(n: int, width: float = 4.2) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * n + 0.6, 3.8))
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def _title(length: int | None) -> str:
    return f"T = {length}" if length else ""


def plot_test_loss(rows: list[dict], path: Path) -> None:
    by_length = groups(rows)
    fig, (ax,) = _panels(1, 1.6 + 1.6 * len(by_length))
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    width = 0.8 / len(cells)
    for g, group in enumerate(by_length.values()):
        for i, cell in enumerate(cells):
            for r in (r for r in group if r["cell"] == cell):
                ax.bar(g + (i - (len(cells) - 1) / 2) * width, r["metrics"]["test/loss"], width, color=_color(cell, i),
                       label=cell if g == 0 else None)
        if baseline := group[0]["metrics"].get(BASELINE):
            ax.hlines(baseline, g - 0.45, g + 0.45, colors="black", linestyles="--",
                      label="predict the train mean" if g == 0 else None)
    losses = [r["metrics"]["test/loss"] for r in rows]
    if max(losses) / max(min(losses), 1e-12) > 20:
        ax.set_yscale("log")
    ax.set_xticks(range(len(by_length)), [_title(t) or "test" for t in by_length])
    ax.set_ylabel("test loss")
    ax.set_title("test loss, parameter counts matched")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def plot_loss_steps(rows: list[dict], path: Path, monitor: str = "val/loss") -> None:
    by_length = groups(rows)
    fig, axes = _panels(len(by_length))
    for ax, (length, group) in zip(axes, by_length.items()):
        values = []
        for i, r in enumerate(group):
            color = _color(r["cell"], i)
            if r["train_curve"]:
                ax.plot(*zip(*r["train_curve"]), color=color, alpha=0.3, lw=1)
            if r["val_curve"]:
                ax.plot(*zip(*r["val_curve"]), color=color, marker="o", ms=3, label=f"{r['cell']} ({monitor})")
            values += [v for _, v in r["train_curve"] + r["val_curve"]]
        if baseline := group[0]["metrics"].get(BASELINE):
            ax.axhline(baseline, color="black", ls="--", lw=1, label="predict the train mean")
            values.append(baseline)
        if values and max(values) / max(min(values), 1e-12) > 20:
            ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("loss (faint: training loss)")
        ax.set_title(_title(length))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_gradient_flow(rows: list[dict], path: Path) -> None:
    by_length = groups(rows)
    fig, axes = _panels(len(by_length))
    for ax, (length, group) in zip(axes, by_length.items()):
        for i, r in enumerate(group):
            color = _color(r["cell"], i)
            for key, style in (("flow_first", {"ls": ":", "lw": 1, "alpha": 0.6}), ("flow_last", {"lw": 1.8})):
                flow = np.asarray(r[key])
                if len(flow) and flow[0] > 0:
                    plot_profile(ax, flow / flow[0], color=color,
                                 label=r["cell"] if key == "flow_last" else None, **style)
        ax.set_ylabel("||dL/dh_(T-k)|| / ||dL/dh_T||")
        ax.set_title(f"{_title(length) + ': ' if length else ''}gradient from the last step", fontsize=10)
        ax.legend(fontsize=8, title="last epoch (dotted: first)", title_fontsize=7)
    _save(fig, path)


def write_report(rows: list[dict], about: dict, out_dir: Path) -> list[Path]:
    """results.csv, results.md and the three plots in out_dir; returns their paths."""
    out_dir = Path(out_dir)
    paths = [out_dir / n for n in ("results.csv", "results.md", "test_loss.png", "val_loss.png",
                                   "gradient_flow.png")]
    write_text(paths[0], results_csv(rows, about["reference_params"]))
    write_text(paths[1], results_md(rows, about))
    plot_test_loss(rows, paths[2])
    plot_loss_steps(rows, paths[3], about.get("monitor", "val/loss"))
    plot_gradient_flow(rows, paths[4])
    return paths

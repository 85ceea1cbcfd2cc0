"""The `seqpipe` command. What a command needs is imported inside it (lazy, on purpose): the stages, sweeps and
models together load torch, Lightning, MLflow and Ray (~6 s on 2 cores), while this module and `--help` take 0.07 s."""

from __future__ import annotations

import argparse
import math
import os
import sys

STAGES = ("fetch", "prepare", "train", "evaluate", "register")


def _precheck_train(overrides: list[str]) -> None:
    """Refuse a bad config before Hydra starts (it would make an outputs/ folder) and before torch and Lightning
    load: one composition, under a second. Sweeps (--multirun a,b) and Hydra's own flags are left to Hydra."""
    from seqpipe.config import check_devices, check_override_keys, compose, validate

    check_override_keys(overrides)
    flags = {o for o in overrides if o.startswith("-")}
    sweep = any("," in o.split("=", 1)[-1] or "(" in o.split("=", 1)[-1] for o in overrides if "=" in o)
    if not sweep and flags <= {"--multirun", "-m"}:
        from seqpipe.data import provenance
        from seqpipe.data.meta import prepared_meta

        cfg = compose([o for o in overrides if not o.startswith("-")])
        validate(cfg)
        check_devices(cfg)
        provenance.check(cfg, prepared_meta(cfg))


def _train(overrides: list[str]) -> None:
    """`seqpipe train key=value ...`: Hydra's own command line (overrides, --multirun, --cfg job)."""
    _precheck_train(overrides)
    from pathlib import Path

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.pytorch.utilities import rank_zero_only
    from omegaconf import DictConfig, OmegaConf, open_dict

    from seqpipe import train
    from seqpipe.cli import launch
    from seqpipe.config import conf_dir
    from seqpipe.errors import SeqpipeError

    def main(cfg: DictConfig) -> None:
        OmegaConf.resolve(cfg)
        hydra_cfg = HydraConfig.get()
        out = hydra_cfg.runtime.output_dir
        with open_dict(cfg):  # each (multi)run keeps its checkpoints and reports in its own Hydra folder
            cfg.paths.models = os.path.join(out, "models")
            cfg.paths.reports = os.path.join(out, "reports")
        try:
            if hydra_cfg.mode == RunMode.MULTIRUN and str(cfg.trainer.get("strategy", "")).startswith("ddp"):
                raise SeqpipeError("--multirun with a DDP trainer is not supported: Lightning starts the other ranks "
                                   "in hydra.run.dir, not in the job's sweep folder; run the jobs one by one")
            # Lightning's DDP launcher starts ranks 1.. by re-running sys.argv, adding hydra.run.dir=<this run's
            # folder> (lightning/fabric/strategies/launchers/subprocess_script.py): make that `seqpipe train` with
            # this job's overrides, so every rank composes the same config and writes into the same folder.
            sys.argv = [str(Path(launch.__file__).with_name("__main__.py")), "train", *hydra_cfg.overrides.task]
            result = train.run(cfg)
        except SeqpipeError as e:  # Hydra would print a traceback; the message is what matters
            print(f"seqpipe: error: {e}", file=sys.stderr)
            sys.exit(2)
        if rank_zero_only.rank == 0:  # DDP: each rank runs this; the others report nothing
            print(f"train: best {cfg.monitor} {result['best_val_loss']:.4f}, checkpoint {result['best_checkpoint']}, "
                  f"MLflow run {result['run_id']}")

    argv = sys.argv
    sys.argv = ["seqpipe train", *overrides]  # what Hydra parses (and names its job and log file after)
    try:
        hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(main)()
    finally:
        sys.argv = argv


def _tune(argv: list[str]) -> None:
    """`seqpipe tune [--resume] key=value ...`: a Ray Tune sweep (conf/tune/) of `seqpipe train`."""
    resume = "--resume" in argv
    overrides = [a for a in argv if a != "--resume"]
    if bad := [a for a in overrides if a.startswith("-")]:
        from seqpipe.errors import SeqpipeError

        raise SeqpipeError(f"seqpipe tune takes --resume and key=value overrides, not {bad[0]!r}")
    from seqpipe.config import check_override_keys, compose

    check_override_keys(overrides)
    cfg = compose(overrides)
    from seqpipe.experiments import tune

    summary = tune.run(cfg, overrides, resume=resume)
    tune.print_summary(summary, cfg.monitor)
    if summary.get("unfinished"):
        raise SystemExit(130)


def _study(name: str, overrides: list[str]) -> None:
    """`seqpipe study NAME key=value ...`: the cells side by side (seqpipe.experiments.study), a table and plots."""
    from seqpipe.config import check_override_keys, compose

    check_override_keys(overrides)
    cfg = compose(overrides)
    from seqpipe.experiments import study

    result = study.run(cfg, name, overrides)
    print(f"study: {', '.join(result['files'])}")


def _report(args: argparse.Namespace) -> None:
    from seqpipe.errors import SeqpipeError
    from seqpipe.experiments import report

    quick_out = f"{args.work}/results.md"  # quick figures never write over the committed table
    result = report.run(args.rows, args.quick, args.spec, args.work, args.results,
                        args.out or (quick_out if args.quick else "docs/results.md"),
                        None if args.quick and not args.out else args.readme, args.tracking_uri)
    print(f"report: {', '.join(result['files'])}")
    if result["failed"]:
        raise SeqpipeError(f"{len(result['failed'])} row(s) did not run: {', '.join(result['failed'])} (the "
                           "reasons are above; the table says not run for them)")


def _stage(name: str) -> None:
    import importlib

    from seqpipe.config import load_params

    cfg = load_params()
    importlib.import_module(f"seqpipe.{name}").run(cfg)


def _compose(overrides: list[str], check: bool, reset: bool) -> None:
    from seqpipe.config import (
        PARAMS_FILE,
        SAVED,
        check_override_keys,
        check_params_fresh,
        conf_dir,
        save_overrides,
        saved_overrides,
        write_params,
    )

    if check:
        import yaml

        from seqpipe.atomic import write_text

        check_params_fresh()
        reports = yaml.safe_load(open(PARAMS_FILE, encoding="utf-8"))["paths"]["reports"]
        write_text(f"{reports}/params_ok.txt", f"{PARAMS_FILE} matches conf/\n")  # constant: see dvc.yaml
        print(f"{PARAMS_FILE} is up to date with conf/", file=sys.stderr)
        return
    if overrides or reset:
        check_override_keys(overrides)
        save_overrides(overrides)  # validated before it is written
    changed = write_params()
    print(f"{PARAMS_FILE} {'written' if changed else 'already up to date'}", file=sys.stderr)
    if saved := saved_overrides():
        print(f"with your overrides, saved in {conf_dir() / SAVED} (`dvc exp run -S` and `seqpipe train` build on "
              f"them; `seqpipe compose --reset` removes them): {' '.join(saved)}", file=sys.stderr)


def _generate(args: argparse.Namespace) -> None:
    from seqpipe.serving import local
    from seqpipe.tracking.uris import tracking_uri

    uri = args.tracking_uri or tracking_uri()
    if lean := local.load(args.model, uri, "generate"):  # a language model in an SQLite store: no MLflow to import
        model, task = lean
        task.run_cli(args, model)
        return
    from seqpipe.cli.predict import load_model  # MLflow: the store checked, the model resolved, the pyfunc loaded

    model = load_model(args.model, uri, "generate").unwrap_python_model()
    model.task.run_cli(args, model)  # text printed as it comes (lm), or a MIDI file (pianoroll)


def _print_row(row: dict) -> None:
    """One answer on one line: column=value, tab-separated, numbers to 4 decimals."""
    print("\t".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def _predict(args: argparse.Namespace) -> None:
    from seqpipe.errors import SeqpipeError
    from seqpipe.serving import local
    from seqpipe.tracking.uris import tracking_uri

    if sum(x is not None for x in (args.text, args.input, args.audio)) != 1:
        raise SeqpipeError("give one of --text TEXT, --audio CLIP or --input FILE (with --output FILE)")
    uri = args.tracking_uri or tracking_uri()
    if args.text is not None and args.beam_width is None and args.n_best is None and \
            (lean := local.load(args.model, uri, "predict")):  # a text model in an SQLite store: no MLflow to import
        served, task = lean
        name = served.meta["task"]
        xs, unk = served.encode_texts([args.text], name)
        _print_row({**task.answer_rows(served, name, served.fit_length(xs), unk)[0], "model": served.model,
                    "run_id": served.run_id})
        return
    from pathlib import Path

    from seqpipe.cli.predict import load_model, predict_file  # MLflow: the store checked, the model resolved
    from seqpipe.data.requests import InputError

    model = load_model(args.model, uri, "predict")
    served = model.unwrap_python_model()
    decoding = {k: v for k, v in (("beam_width", args.beam_width), ("n_best", args.n_best)) if v is not None}
    if set(decoding) - set(served.task.params):
        raise SeqpipeError(f"--beam-width and --n-best are for models that decode sequences (seq2seq, ctc); "
                           f"{args.model} is a {served.task.name!r} model")
    decoding = decoding or None
    if args.audio is not None:
        request = served.kind.audio_request(args.audio, served.limits)  # the file is read here, never by the model
        try:
            row = model.predict(request, params=decoding).iloc[0]
        except InputError as e:  # the reason names the clip; "row 0" would say nothing more
            raise SeqpipeError(e.reason) from None
        print(row["text"])
        print(f"predict: score {row['score']:.3f} ({row['model']})", file=sys.stderr)
        return
    if args.text is not None:
        _print_row(model.predict(served.kind.text_request(args.text), params=decoding).iloc[0].to_dict())
        return
    output = Path(args.output or Path(args.input).with_suffix(".predictions.csv"))
    n = predict_file(model, Path(args.input), output, args.column or served.column, args.batch_size, decoding)
    print(f"predict: {n} rows -> {output}", file=sys.stderr)


def _export(args: argparse.Namespace) -> None:
    from seqpipe.cli import export
    from seqpipe.tracking.uris import tracking_uri

    export.run(args.model, args.tracking_uri or tracking_uri(), args.format, args.quantize, args.out)


def _team_server(args: argparse.Namespace) -> None:
    """`seqpipe team-server start|stop`: PostgreSQL and `mlflow server` on it, in a folder (seqpipe.tracking)."""
    from pathlib import Path

    from seqpipe.tracking import team_server

    if args.action == "stop":
        team = team_server.stop(Path(args.dir))
        print(f"team server in {team.folder} stopped (its data stays for the next start)", file=sys.stderr)
        return
    team = team_server.start(Path(args.dir), args.port, args.host)
    print(f"team server: PostgreSQL on 127.0.0.1:{team.pg_port} ({team.pgdata}), mlflow server on {team.url} "
          f"(artifacts in {team.folder}/artifacts, log {team.folder}/mlflow.log); on each machine that trains:",
          file=sys.stderr)
    print(f"export MLFLOW_TRACKING_URI={team.url}")


def _migrate_store(args: argparse.Namespace) -> None:
    from pathlib import Path

    from seqpipe.errors import SeqpipeError
    from seqpipe.tracking.migrate import migrate
    from seqpipe.tracking.store import shown_uri
    from seqpipe.tracking.team_server import Team

    if (Path(args.target) / "team.json").is_file():  # a `seqpipe team-server` folder: its database and server
        team = Team.load(Path(args.target))
        args.target, args.server = team.db_uri, args.server or team.url
    if not args.server:
        raise SeqpipeError("--server is needed with a database URI as --to: the server stores the artifacts")
    done = migrate(args.source, args.target, args.server)
    rows = done["rows"]
    print(f"migrate-store: {rows.get('experiments', 0)} experiments, {rows.get('runs', 0)} runs, "
          f"{rows.get('metrics', 0)} metric values, {rows.get('registered_models', 0)} registered models "
          f"({rows.get('model_versions', 0)} versions), {done['artifact_bytes'] / 2**20:.1f} MiB of artifacts from "
          f"{args.source} to {shown_uri(args.target)} (served by {args.server}) in {done['seconds']} s; run ids, "
          "version numbers and aliases are unchanged", file=sys.stderr)


def _at_least(low: float, kind: type = int, check=None):  # noqa: ANN001, ANN202
    """An argparse type: a `kind` (int or float) >= low, finite, and passing `check` (a function that raises
    ValueError, e.g. the served model's own range check); the message names the value and the bound."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"{text} must be {'' if kind is int else 'a finite number '}>= {low:g}")
        if check is not None:
            try:
                check(value)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqpipe", description="Raw sequences to a trained, tracked, registered, "
                                "servable RNN/GRU/LSTM. The pipeline itself runs with `dvc repro`.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train with Hydra overrides, e.g. model.cell=gru trainer.max_epochs=1",
                       add_help=False)
    t.add_argument("overrides", nargs=argparse.REMAINDER)
    tu = sub.add_parser("tune", help="a Ray Tune sweep of seqpipe train over conf/tune/ (ASHA, MLflow parent and "
                        "child runs, the best trial as conf/experiment/best_<recipe>.yaml)")
    tu.add_argument("--resume", action="store_true", help="continue the last interrupted sweep (or tune.name=NAME)")
    tu.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. recipe=imdb tune.num_samples=16 "
                    "trainer.max_epochs=4")
    st = sub.add_parser("study", help="train the cells side by side with matched parameter counts, as MLflow "
                        "runs of one parent; table and plots in reports/studies/ (README: Studies)")
    st.add_argument("name", help="the study: gating (tanh RNN, GRU, LSTM)")
    st.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. recipe=adding study.parallel=2 "
                    "study.trainer.max_epochs=10")
    rp = sub.add_parser("report", help="train each recipe's defaults and set its figure beside its published "
                        "anchor in docs/results.md, the README and a plot (conf/report.yaml; docs/results.md)")
    rp.add_argument("--rows", default=None, help="comma-separated rows of conf/report.yaml (default: all); the "
                    "others keep their last figures")
    rp.add_argument("--quick", action="store_true", help="a few batches a row: checks every row runs (CI); "
                    "writes WORK/results.md, not the docs, unless --out")
    rp.add_argument("--spec", default=None, help="the rows (default: conf/report.yaml)")
    rp.add_argument("--work", default="outputs/report", help="data, checkpoints and reports of the rows "
                    "(default: %(default)s)")
    rp.add_argument("--results", default="reports/results", help="each row's figures, ROW.json (default: "
                    "%(default)s)")
    rp.add_argument("--out", default=None, help="the page to write (default: docs/results.md)")
    rp.add_argument("--readme", default="README.md", help="its Results section gets the table too")
    rp.add_argument("--tracking-uri", default=None,
                    help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    c = sub.add_parser("compose", help="compose conf/ (plus overrides) into params.yaml for DVC")
    c.add_argument("overrides", nargs="*")
    c.add_argument("--check", action="store_true", help="only check that params.yaml is up to date")
    c.add_argument("--reset", action="store_true", help="forget the overrides saved by an earlier compose")
    s = sub.add_parser("stage", help="run one DVC stage with params.yaml (dvc.yaml calls this)")
    s.add_argument("name", choices=STAGES)
    # generate: a temperature and seed in the ranges the served models take, refused before any model loads
    from seqpipe.data.sampling_bounds import check_seed, check_temperature

    g = sub.add_parser("generate", help="generate text from a registered model")
    g.add_argument("--model", default="models:/seqpipe-shakespeare@champion",
                   help="models:/NAME@ALIAS, models:/NAME/VERSION, a model path, or this checkout's training "
                   "checkpoint: models/ or a .ckpt file, read with params.yaml and data/prepared "
                   "(default: %(default)s)")
    g.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    g.add_argument("--bos", action="store_true", help="read --prompt as the start of a document, after <bos> (an "
                   "empty prompt always is), e.g. a tweet's rating: --bos --prompt '1★ '")
    g.add_argument("--max-new-tokens", type=_at_least(0), default=300,
                   help="tokens to generate, up to the model's limit (default: %(default)s)")
    g.add_argument("--temperature", type=_at_least(0, float, check_temperature), default=0.8,
                   help="0 = greedy, else 0.0001 to 10000 (default: %(default)s)")
    g.add_argument("--top-k", type=_at_least(0), default=0, help="sample from the k most likely tokens; 0 = all")
    g.add_argument("--seed", type=_at_least(-1, check=check_seed), default=-1,
                   help="fix the sampling seed (up to 2**63 - 1); -1 = random")
    g.add_argument("--beam-width", type=_at_least(1), default=1,
                   help="> 1: the most likely continuation by beam search, printed at the end (default: sampling)")
    g.add_argument("--steps", type=int, default=64,
                   help="music models: frames to generate after the primer (default: %(default)s)")
    g.add_argument("--out", default=None, help="music models: the MIDI file to write (default: generated.mid)")
    g.add_argument("--primer", default=None, help="music models: a MIDI file whose notes the piece continues")
    g.add_argument("--out-of-range", choices=("error", "clamp"), default="error",
                   help="music models: primer pitches outside the model's range are an error, or moved by octaves "
                        "into it (default: %(default)s)")
    g.add_argument("--logprobs", action="store_true",
                   help="after the text, print each new token with its log-probability (to stderr)")
    g.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    pr = sub.add_parser("predict", help="label texts or frame sequences (classifier), tag sequences (tagger) or "
                        "score them (regression) with a registered model")
    pr.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, a model path, or "
                    "this checkout's training checkpoint (models/ or a .ckpt file)")
    pr.add_argument("--text", help="one text to label")
    pr.add_argument("--audio", help="speech models: one clip to transcribe (WAV, FLAC, OGG; any rate, mono or "
                    "stereo); prints the words")
    pr.add_argument("--input", help="a CSV/TSV/JSONL file with a text column, or JSONL with a frames column; speech "
                    "models: also a folder of clips or a .txt list of them (one path a line), written to a CSV")
    pr.add_argument("--output", help="where to write the input plus predictions (default: INPUT.predictions.csv)")
    pr.add_argument("--column", default=None, help="the input column of --input (default: text, or frames)")
    pr.add_argument("--batch-size", type=_at_least(1), default=256)
    pr.add_argument("--beam-width", type=_at_least(1), default=None,
                    help="seq2seq: beam width (default: the model's, as evaluated); 1 = greedy")
    pr.add_argument("--n-best", type=_at_least(1), default=None,
                    help="seq2seq: how many outputs per input (column n_best, JSON), at most the beam width")
    pr.add_argument("--tracking-uri", default=None,
                    help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    ex = sub.add_parser("export", help="write a registered model's network as ONNX (for ONNX Runtime), optionally "
                        "int8, checked against PyTorch and logged beside the model version (docs/serving.md)")
    ex.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION or a model path")
    ex.add_argument("--format", default="onnx", choices=("onnx",))
    ex.add_argument("--quantize", default=None, choices=("int8",), help="dynamic int8 weights (LSTM, linear layers)")
    ex.add_argument("--out", default=None, help="the folder to write (default: exports/NAME-vVERSION-onnx[-int8])")
    ex.add_argument("--tracking-uri", default=None,
                    help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    ts = sub.add_parser("team-server", help="start or stop a team tracking server here: PostgreSQL and mlflow "
                        "server on it, artifacts served by the server (docs/team.md)")
    ts.add_argument("action", choices=("start", "stop"))
    ts.add_argument("--dir", default=".team", help="where its database, artifacts and logs live (default: "
                    "%(default)s)")
    ts.add_argument("--port", type=int, default=5000, help="the mlflow server's port (default: %(default)s)")
    ts.add_argument("--host", default="127.0.0.1", help="the address it listens on; 0.0.0.0 for other machines "
                    "(default: %(default)s)")
    ms = sub.add_parser("migrate-store", help="copy an SQLite MLflow store (runs, models, aliases, artifacts) into "
                        "a team server's empty database, keeping every id (docs/team.md)")
    ms.add_argument("--from", dest="source", required=True, help="the SQLite store, e.g. sqlite:///mlflow.db")
    ms.add_argument("--to", dest="target", required=True, help="the folder of `seqpipe team-server` (.team), or "
                    "the server's database: postgresql+psycopg://mlflow:PASSWORD@HOST:5432/mlflow")
    ms.add_argument("--server", default=None, help="the tracking server on that database, which stores the "
                    "artifacts, e.g. http://HOST:5000 (default with a team-server folder: its server)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        # Everything after `train` is Hydra's (overrides, --multirun, --cfg job): argparse would take the flags.
        args = argparse.Namespace(command="train", overrides=argv[1:])
    elif argv[:1] == ["tune"] and not {"-h", "--help"} & set(argv):
        args = argparse.Namespace(command="tune", overrides=argv[1:])
    else:
        args = parser().parse_args(argv)
    from seqpipe.errors import SeqpipeError

    try:
        if args.command == "train":
            _train(args.overrides)
        elif args.command == "tune":
            _tune(args.overrides)
        elif args.command == "study":
            _study(args.name, args.overrides)
        elif args.command == "compose":
            _compose(args.overrides, args.check, args.reset)
        elif args.command == "stage":
            _stage(args.name)
        elif args.command == "report":
            _report(args)
        elif args.command == "generate":
            _generate(args)
        elif args.command == "predict":
            _predict(args)
        elif args.command == "export":
            _export(args)
        elif args.command == "team-server":
            _team_server(args)
        elif args.command == "migrate-store":
            _migrate_store(args)
    except SeqpipeError as e:
        print(f"seqpipe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nseqpipe: interrupted", file=sys.stderr)
        return 130
    except PermissionError as e:  # any file the user may not read or write, wherever it is opened
        print(f"seqpipe: error: {e.filename}: {e.strerror}; check the path and its permissions", file=sys.stderr)
        return 2
    except Exception as e:  # Hydra's own config errors (unknown group, bad override syntax) are input errors too,
        from hydra.errors import HydraException  # and so is a request a model refuses (its limits, bad params)
        from omegaconf.errors import OmegaConfBaseException

        from seqpipe.data.request_checks import RequestError

        if not isinstance(e, HydraException | OmegaConfBaseException | RequestError):
            raise
        print(f"seqpipe: error: {str(e).removeprefix('seqpipe: ')}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

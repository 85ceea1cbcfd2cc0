"""Move a SQLite MLflow store to a team server: every row copied into the server's (empty) database, so run ids,
model version numbers and aliases stay what they were (reports/train.json, dvc.lock and the version tags keep
naming the right runs: a registration after the move finds its version and adds none), and the artifacts uploaded
through the server, their locations rewritten to the server's `mlflow-artifacts:/` ones.

MLflow has no tool for this: `mlflow migrate-filestore` moves a file store (mlruns/) into SQLite only, and
mlflow-export-import copies through the REST API, which gives every run a new id and knows no MLflow 3 logged
models (what a registered version points at)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import mlflow
import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

from seqpipe.errors import SeqpipeError
from seqpipe.tracking.store import check_store, shown_uri, sqlite_path

# Rows that say the target is in use: it must hold none of these (its Default experiment, empty, is replaced)
IN_USE = ("runs", "registered_models", "logged_models", "trace_info", "datasets")
SKIP = ("alembic_version",)  # the schema's version: checked, not copied
CHUNK = 1000


def _engine(uri: str, role: str) -> sa.Engine:
    try:
        engine = sa.create_engine(uri)
        with engine.connect() as con:
            con.execute(sa.text("SELECT 1"))
    except Exception as e:  # the driver's own errors (refused, bad password, no such database, no driver)
        raise SeqpipeError(f"cannot open the {role} store {shown_uri(uri)}: {str(e).splitlines()[0][:300]}; nothing "
                           "was changed") from None
    return engine


def _schema(con: sa.Connection, uri: str, role: str) -> str:
    try:
        return con.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    except Exception:
        fix = ("start `mlflow server --backend-store-uri` on it once (it creates the tables), or run `mlflow db "
               "upgrade` on it" if role == "target" else "point --from at your MLflow store")
        raise SeqpipeError(f"the {role} {shown_uri(uri)} holds no MLflow tables: {fix}; nothing was changed") from None


def _local_dir(location: str) -> Path | None:
    """The folder of an artifact location on this machine's disk (a path or file:// URI), else None."""
    parts = urlsplit(location)
    if parts.scheme in ("", "file"):
        return Path(unquote(parts.path))
    return None


def _check_target(con: sa.Connection, uri: str) -> None:
    held = {t: con.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in IN_USE}
    experiments = con.execute(sa.text("SELECT experiment_id FROM experiments")).scalars().all()
    if any(held.values()) or set(experiments) - {0}:
        what = ", ".join(f"{n} {t}" for t, n in held.items() if n) or f"{len(experiments)} experiments"
        raise SeqpipeError(f"the target {shown_uri(uri)} is in use ({what}): migrate into an empty store, a new "
                           "database that `mlflow server` has started on once; nothing was changed")


def _relocate(locations: dict[str, str]):  # noqa: ANN202
    """A function that rewrites any string beginning with a moved artifact folder to the new location."""
    prefixes = sorted(((old, new) for old, new in locations.items()), key=lambda p: -len(p[0]))

    def rewrite(value: object) -> object:
        if isinstance(value, str):
            for old, new in prefixes:
                if value == old or value.startswith(old + "/"):
                    return new + value[len(old):]
        return value

    return rewrite


def _fix_sequences(con: sa.Connection, tables: list[sa.Table]) -> None:
    """PostgreSQL's counters (experiment ids, ...) start after the copied ids, so the next experiment does not
    collide with a copied one."""
    for table in tables:
        for column in table.primary_key.columns:
            seq = con.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                              {"t": table.name, "c": column.name}).scalar()
            if seq:
                con.execute(sa.text(f"SELECT setval('{seq}', GREATEST((SELECT COALESCE(MAX({column.name}), 0) FROM "
                                    f"{table.name}), 1))"))


def migrate(source: str, target: str, server: str) -> dict:
    """Copy the SQLite store `source` into the empty database `target` that the tracking server `server` runs on,
    uploading the artifacts through `server`. All rows go in one transaction: on any error nothing is committed."""
    if urlsplit(source).scheme != "sqlite" or not sqlite_path(source).is_file():
        raise SeqpipeError(f"--from takes an SQLite store that exists (sqlite:///mlflow.db), not {source}")
    if urlsplit(target).scheme in ("http", "https", "sqlite", ""):
        raise SeqpipeError(f"--to takes the team server's database (postgresql+psycopg://user:password@host:5432/db)"
                           f", not {shown_uri(target)}: the rows are copied as they are, so ids stay the same; "
                           "--server takes the server's URL")
    check_store(server)  # the artifacts go through it: it must answer before anything is copied
    t0, src, dst = time.monotonic(), _engine(source, "source"), _engine(target, "target")
    with src.connect() as scon, dst.begin() as dcon:
        if (have := _schema(scon, source, "source")) != (want := _schema(dcon, target, "target")):
            raise SeqpipeError(f"the stores' MLflow schemas differ (source {have}, target {want}): run the same "
                               f"MLflow version on both; upgrade a copy of the source with `mlflow db upgrade "
                               f"sqlite:///copy.db` first; nothing was changed")
        _check_target(dcon, target)
        experiments = scon.execute(sa.text("SELECT experiment_id, artifact_location FROM experiments")).all()
        locations, uploaded = {}, 0
        for exp_id, location in experiments:
            folder = _local_dir(location or "")
            if folder is None:
                continue  # already remote (s3://, mlflow-artifacts:/): the rows keep pointing at it
            new = f"mlflow-artifacts:/{exp_id}"
            locations[location] = new
            locations[str(folder)] = new  # the same folder written as a plain path
            if folder.is_dir():
                MlflowArtifactsRepository(new, tracking_uri=server).log_artifacts(str(folder))
                uploaded += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        rewrite = _relocate(locations)
        meta, smeta = sa.MetaData(), sa.MetaData()
        meta.reflect(dcon)
        smeta.reflect(scon)  # SQLite's declared types read its values back (0/1 as booleans, dates as datetimes)
        dcon.execute(sa.text("DELETE FROM experiment_tags WHERE experiment_id = 0"))
        dcon.execute(sa.text("DELETE FROM experiments WHERE experiment_id = 0"))  # the target's empty Default
        counts = {}
        for table in meta.sorted_tables:  # parents before children
            if table.name in SKIP or table.name not in smeta.tables:
                continue
            flags = {c.name for c in table.columns if isinstance(c.type, sa.Boolean)}
            key = [c.name for c in table.primary_key.columns]
            # what the server wrote for itself when it started (its default workspace): kept, not copied twice
            held = {tuple(r) for r in dcon.execute(sa.select(*table.primary_key.columns))} if key else set()
            n, batch = 0, []
            for row in scon.execute(sa.select(smeta.tables[table.name])).mappings():
                if held and tuple(row[k] for k in key) in held:
                    continue
                batch.append({k: bool(v) if k in flags and v is not None else rewrite(v)
                              for k, v in row.items() if k in table.columns})
                if len(batch) == CHUNK:
                    dcon.execute(table.insert(), batch)
                    n, batch = n + len(batch), []
            if batch:
                dcon.execute(table.insert(), batch)
                n += len(batch)
            if n:
                counts[table.name] = n
        if dst.dialect.name == "postgresql":
            _fix_sequences(dcon, meta.sorted_tables)
        sample = scon.execute(sa.text("SELECT run_uuid FROM runs LIMIT 1")).scalar()
    if sample is not None and not _serves(server, sample):
        raise SeqpipeError(f"the rows went into {shown_uri(target)}, but the server {server} does not show run "
                           f"{sample}: it runs on another database (and holds the artifacts now). Run the migration "
                           "again into a new empty database, with --server the server that runs on it")
    return {"rows": counts, "artifact_bytes": uploaded, "seconds": round(time.monotonic() - t0, 1)}


def _serves(server: str, run_id: str) -> bool:
    """Whether the tracking server shows a run just copied into the database (it runs on that database)."""
    try:
        mlflow.MlflowClient(server).get_run(run_id)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    return True

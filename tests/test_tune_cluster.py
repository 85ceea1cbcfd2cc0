"""seqpipe tune on a Ray cluster of two nodes on this machine: a head and a worker node, each a `ray start --block`
in its own process group with one CPU, so a sweep of 1-CPU trials runs one trial on each. The worker is killed
mid-sweep (its trial runs again on the head, tune.max_failures), and the head is lost mid-sweep (`--resume` on a
restarted cluster finishes the sweep). Only the processes started here are stopped: `ray stop` would end every
Ray on the machine."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import free_port
from test_tune import RAY, SEQPIPE, project, sweep_runs, tune_cli  # noqa: F401 (project is a fixture)

pytestmark = pytest.mark.slow
# Two 1-CPU trials, one for each node, each long enough (several seconds) that the worker node's trial starts
# before the head's ends (a busy machine takes seconds to start a trial's worker process), and that a node can be
# lost while one trains. ASHA stops none.
TWO = ["~tune.space", "+tune.space.optim.lr.grid=[0.003,0.03]", "model.hidden_size=256", "tune.num_samples=1",
       "tune.cpus_per_trial=1", "trainer.max_epochs=3", "tune.scheduler.grace_period=3",
       "trainer.limit_train_batches=1.0"]
COLUMNS = ["trial", "status", "best", "last", "epochs", "stopped", "fit_seconds", "error", "node", "node_id",
           "attempts", "failures", "run_id"]


class Cluster:
    """A head and a worker node on 127.0.0.1, one CPU each. The node names (head, worker) tag the trials' runs."""

    def __init__(self, home: Path):
        self.port = free_port()
        self.temp = Path(tempfile.mkdtemp(prefix="seqpipe-ray-"))  # short: Ray's socket paths must stay under 107
        # The GCS declares a lost node dead after 5 failed health checks a second apart (Ray's default: 3 s apart),
        # so the trials of a killed worker are failed, and run again, within seconds.
        self.env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5",
                    "RAY_AUTH_MODE": "token"}  # the worker node sends HOME's token (docs/tuning.md)
        self.nodes: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        role = ["--head", f"--port={self.port}", "--include-dashboard=false"] if name == "head" else [
            f"--address=127.0.0.1:{self.port}"]
        # Two nodes on one machine: each its own agent and metrics ports (Ray's defaults are fixed numbers).
        ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                 f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]
        log = open(self.temp / f"{name}.log", "w")  # noqa: SIM115 (the node writes it until it is stopped)
        proc = subprocess.Popen([RAY, "start", "--block", *role, "--num-cpus=1", f"--node-name={name}",
                                 "--node-ip-address=127.0.0.1", "--object-store-memory=100000000",
                                 "--disable-usage-stats", f"--temp-dir={self.temp}", *ports],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes[name] = proc
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in (self.temp / f"{name}.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (self.temp / f"{name}.log").read_text()
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        """The node is lost: its raylet, agents and workers die at once. They are the session of its `ray start`
        (the raylet puts each worker in a process group of its own, so killing the group would leave the workers)."""
        proc = self.nodes.pop(name, None)
        if proc is not None:
            for pid in session(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(timeout=30)

    def stop(self) -> None:
        for name in ("worker", "head"):
            self.kill(name)


def session(sid: int) -> list[int]:
    """The processes of session `sid`, from /proc (field 6 of /proc/PID/stat)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture(scope="module")
def cluster(project) -> Cluster:  # noqa: F811
    # A local sweep leaves a Ray token in HOME, as a user's earlier sweeps would (ray.init writes it with this
    # function; starting a whole local Ray for it costs ~6 s); `ray start` then turns on token authentication, and the
    # sweep given tune.address must send the token.
    subprocess.run([sys.executable, "-c", "from ray._private.authentication.authentication_token_setup import "
                    "generate_and_save_token; generate_and_save_token()"],
                   env={**os.environ, "HOME": str(project / "home")}, check=True, capture_output=True, timeout=120)
    assert (project / "home" / ".ray" / "auth_token").is_file()
    c = Cluster(project / "home")
    try:
        c.start("head")
        c.start("worker")
        yield c
    finally:
        c.stop()
        shutil.rmtree(c.temp, ignore_errors=True)


def rows_of(root: Path, name: str) -> list[dict]:
    return list(csv.DictReader(open(root / "sweeps" / name / "results.csv")))


def wait_for(check, proc: subprocess.Popen, timeout_s: float = 120, every_s: float = 0.2) -> object:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "timeout"
        time.sleep(every_s)
    return found


def training_on(root: Path, name: str, node: str) -> str | None:
    """The trial of sweep `name` that trains on `node` (its run is tagged when its training starts), if any."""
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seqpipe-text_file")
    runs = client.search_runs([exp.experiment_id], f"tags.sweep = '{name}' and tags.`node.name` = '{node}'") if exp \
        else []
    return runs[0].data.tags["trial"] if runs else None


def checkpointed(root: Path, name: str, trial: str) -> bool:
    return (root / "sweeps" / name / "trials" / trial / "models" / "checkpoints" / "last.ckpt").is_file()


def test_sweep_places_trials_on_both_nodes(project, cluster):  # noqa: F811
    """Two 1-CPU trials on two 1-CPU nodes: both nodes train, and the sweep leaves what a local sweep leaves."""
    done = tune_cli(project, f"tune.address=127.0.0.1:{cluster.port}", *TWO, name="two")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parent, children = sweep_runs(project, "two")
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["node.name"] for r in children} == {"head", "worker"}
    assert len({r.data.tags["node"] for r in children}) == 2  # node ids: the nodes share 127.0.0.1
    assert len({r.data.tags["node.ip"] for r in children}) == 1
    rows = rows_of(project, "two")
    assert list(rows[0]) == [*COLUMNS[:2], "optim.lr", *COLUMNS[2:]]
    assert {r["node"] for r in rows} == {"head", "worker"} and {r["attempts"] for r in rows} == {"1"}
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep/trials"] == 2
    artifacts = {a.path for a in mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").list_artifacts(
        parent.info.run_id)}
    assert {"results.csv", "sweep.png", "summary.json"} <= artifacts
    best = min(rows, key=lambda r: float(r["best"]))
    experiment = (project / "conf" / "experiment" / "best_text_file.yaml").read_text()
    assert f"({best['trial']}, best" in experiment and "of sweep two" in experiment
    assert yaml.safe_load(experiment)["optim"]["lr"] == pytest.approx(float(best["optim.lr"]))
    assert "2 trials on 2 Ray nodes" in done.stderr
    assert not (project / "home" / "ray_results").exists()


def test_a_lost_worker_node_is_retried_on_the_head(project, cluster):  # noqa: F811
    """The worker node is killed while a trial trains there: Ray runs that trial again on the head, from its last
    checkpoint and in its MLflow run, and the sweep ends with every trial finished and the best one written."""
    proc = tune_cli(project, f"tune.address=127.0.0.1:{cluster.port}", *TWO, wait=False, name="fault")
    lost = wait_for(lambda: training_on(project, "fault", "worker"), proc)
    wait_for(lambda: checkpointed(project, "fault", lost), proc, every_s=0.02)  # after its first epoch
    cluster.kill("worker")
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-5000:]
    parent, children = sweep_runs(project, "fault")
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)  # one run per trial
    rows = {r["trial"]: r for r in rows_of(project, "fault")}
    # tune.max_failures=2: losing a node can cost two (the trial's worker, then an attempt placed on the node before
    # Ray has declared it dead)
    assert rows[lost]["failures"] in ("1", "2") and rows[lost]["attempts"] == "2" and rows[lost]["node"] == "head"
    assert rows[lost]["epochs"] == "3"  # the attempt on the head went on from the worker's checkpoint
    assert all(r["status"] == "FINISHED" and r["best"] for r in rows.values())
    assert parent.info.status == "FINISHED"
    best = min(rows.values(), key=lambda r: float(r["best"]))
    assert f"({best['trial']}, best" in (project / "conf" / "experiment" / "best_text_file.yaml").read_text()
    assert "attempt(s) lost with a worker or node" in out


def test_a_sweep_resumes_after_the_head_is_lost(project, cluster):  # noqa: F811
    """The head node is lost mid-sweep, and the sweep's driver with it (it ran on the head); on a restarted cluster
    of two nodes, `seqpipe tune --resume` finishes the sweep in the same parent run. (The sweep starts on the head
    alone, the worker having been lost by the test before.)"""
    proc = tune_cli(project, f"tune.address=127.0.0.1:{cluster.port}", *TWO, wait=False, name="resume")
    trial = wait_for(lambda: training_on(project, "resume", "head"), proc)
    wait_for(lambda: checkpointed(project, "resume", trial), proc, every_s=0.02)
    cluster.kill("head")
    proc.kill()  # the driver ran on the head
    proc.communicate(timeout=60)
    cluster.stop()
    parent, _ = sweep_runs(project, "resume")
    assert parent.info.status == "RUNNING"  # nothing ended it
    cluster.start("head")
    cluster.start("worker")
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "HOME": str(project / "home"),
           "SEQPIPE_CONF_DIR": str(project / "conf")}
    done = subprocess.run([SEQPIPE, "tune", "--resume", f"tune.storage={project / 'sweeps'}", "tune.name=resume"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parent, children = sweep_runs(project, "resume")
    rows = rows_of(project, "resume")
    assert parent.info.status == "FINISHED" and len(rows) == 2 and all(r["status"] == "FINISHED" for r in rows)
    assert {r.data.tags["trial"] for r in children} == {r["trial"] for r in rows}
    assert "sweep resume" in (project / "conf" / "experiment" / "best_text_file.yaml").read_text()

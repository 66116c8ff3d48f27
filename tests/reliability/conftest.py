"""The reliability tests reuse the experiment-runner fixtures of tests/training/conftest.py."""

import hashlib
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "mtlrec_training_conftest", Path(__file__).resolve().parents[1] / "training" / "conftest.py"
)
training_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(training_conftest)

# fixtures (pytest finds them by name in this module)
tiny = training_conftest.tiny
funnel_root = training_conftest.funnel_root
make_config = training_conftest.make_config
cli = training_conftest.cli
cli_in_process = training_conftest.cli_in_process


@pytest.fixture(scope="session")
def training():
    """The module tests/training/conftest.py (``DAYS``, ``config_file``, ``merge``, ``REPO``...)."""
    return training_conftest


@pytest.fixture(scope="session")
def snapshot():
    """``snapshot(directory) -> {relative path: sha256}`` of every file below it."""
    return _snapshot


def _snapshot(directory) -> dict:
    """{relative path: sha256 of the contents} of every file below ``directory``."""
    directory = Path(directory)
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class PsCluster:
    """One ``parameter_server`` cluster on 127.0.0.1 (2 workers, 2 ps) whose worker and ps
    tasks serve the chiefs of several tests in turn, as a real cluster serves the daily
    commands of its chief: each chief connects anew, and a test that kills a task restarts it
    at the same address before it ends.

    Starting the four tasks costs four TensorFlow start-ups; the tests share them."""

    JOBS = [(job, i) for job in ("ps", "worker") for i in range(2)]
    ENV = {"TF_NUM_INTEROP_THREADS": "4"}  # docs/guide/scaling.md: fewer inter-op threads hang the first step

    def __init__(self, directory, training, config):
        from mtlrec.training.distribute.parameter_server import local_cluster

        self.directory, self.training, self.config = Path(directory), training, config
        self.spec = local_cluster(workers=2, ps=2)
        self.tasks, self.logs, self.started = {}, {}, 0
        self.start(self.JOBS)
        self.served = False  # no chief has connected yet: the ports may still change

    def env(self, job, index=0, **extra):
        """The environment of task ``job`` ``index`` (the chief's: ``env("chief")``)."""
        from mtlrec.training.distribute.parameter_server import tf_config

        return self.training.subprocess_env(TF_CONFIG=tf_config(self.spec, job, index), **self.ENV, **extra)

    def start(self, tasks):
        """Start (or restart, at the same address) the worker and ps ``tasks`` [(job, index)]."""
        import subprocess
        import sys

        for job, i in tasks:
            self.started += 1
            self.logs[job, i] = self.directory / f"{self.started:02d}-{job}{i}.log"
            with open(self.logs[job, i], "w") as log:
                self.tasks[job, i] = subprocess.Popen(
                    [sys.executable, "-m", "mtlrec.cli", "train", str(self.config), "--day", "2024-01-01"],
                    env=self.env(job, i), stdout=log, stderr=subprocess.STDOUT, cwd=str(self.directory))

    def kill(self, *tasks):
        """SIGKILL the ``tasks`` [(job, index)] at once (all signalled before any is waited
        for, as when a machine dies)."""
        for task in tasks:
            self.tasks[task].kill()
        for task in tasks:
            self.tasks[task].wait(timeout=30)

    def wait_ready(self, timeout=300):
        """Returns once every task serves (its log says so), so that a chief started then
        connects at once; fails naming a task that exited, with its log.

        ``local_cluster`` picks ports that are free when it is called; a task binds its port
        seconds later (TensorFlow's start-up: a minute on a loaded machine), and another
        process may take it meanwhile: that task exits ("Could not start gRPC server"), and a
        chief waits for it until its connect timeout (``MTLREC_PS_CONNECT_TIMEOUT``, 60 s)
        and exits 1, or talks to whatever took the port. Before any chief has connected, the
        cluster then starts again on new ports (at most 3 times). A task found dead otherwise
        (a test that failed before it restarted the task it killed) starts again at its
        address, so that one failure does not fail the next cluster tests."""
        import time

        from mtlrec.training.distribute.parameter_server import local_cluster

        deadline, restarts = time.monotonic() + timeout, 0
        dead = [task for task, proc in self.tasks.items() if proc.poll() is not None]
        if self.served and dead:
            self.start(dead)
        while waiting := [(job, i) for (job, i) in self.JOBS if f"{job} {i} serving at {self.spec[job][i]}"
                          not in self.logs[job, i].read_text(errors="replace")]:
            for job, i in waiting:
                if self.tasks[job, i].poll() is None:
                    continue
                log = self.logs[job, i].read_text(errors="replace")
                if not self.served and restarts < 3 and "Could not start gRPC server" in log:
                    restarts += 1
                    self.close()
                    self.spec = local_cluster(workers=2, ps=2)
                    self.start(self.JOBS)
                    break
                pytest.fail(f"{job} {i} exited {self.tasks[job, i].returncode} before serving:\n{log[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not serving after {timeout} s: {waiting}")
            time.sleep(0.2)
        self.served = True

    def close(self):
        for proc in self.tasks.values():
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="session")
def ps_cluster(tmp_path_factory, funnel_root):
    """A ``PsCluster`` shared by the cluster tests of this process (each test waits for it
    with ``wait_ready()`` before starting its chief)."""
    directory = tmp_path_factory.mktemp("ps_cluster")
    config = training_conftest.config_file(directory, funnel_root, {"training": {"strategy": "parameter_server"}})
    cluster = PsCluster(directory, training_conftest, config)
    yield cluster
    cluster.close()


@pytest.fixture
def fresh_ps_cluster(tmp_path, funnel_root):
    """A ``PsCluster`` of this test alone, for the tests that kill its worker or ps tasks (as
    they had before the cluster was shared): on the shared cluster, whose tasks were killed
    one after the other, the test that kills every worker failed 2 runs in 5 (TensorFlow's
    coordinator met a stale remote tensor, or let an UNAVAILABLE through); on a cluster of
    its own, the workers killed at once, it passed 4 in 4, as the test before the change."""
    config = training_conftest.config_file(tmp_path, funnel_root, {"training": {"strategy": "parameter_server"}},
                                           name="servers.yaml")
    cluster = PsCluster(tmp_path, training_conftest, config)
    yield cluster
    cluster.close()

"""``compare``'s trials on Ray: resumable after the driver is killed, retried when a worker
dies, the same learning curves as in-process, and bad addresses refused in seconds.

Every process a test starts is ended by its PID (the driver's session, listed with psutil);
every subprocess has a timeout. The runs are tiny (``--quick``, 10 steps).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from keras_lstm_variants.commands.trials import RESULTS, thread_env  # noqa: E402

TINY = ["--quick", "--task", "adding", "--steps", "10", "--eval-every", "10"]
TINY += ["--no-export", "--no-tensorboard", "--units", "4"]
#: The console script (keras_lstm_variants_launcher), which keeps TensorFlow's start-up quiet.
LAUNCH = "import sys; from keras_lstm_variants_launcher import main; sys.exit(main())"
COMMAND = [sys.executable, "-c", LAUNCH, "compare", *TINY]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
ENV.pop("RAY_ADDRESS", None)


def end_session(process):
    """SIGKILL ``process`` and every process of its session (Ray's, started under it), by
    PID."""
    try:
        sid = os.getsid(process.pid)
    except ProcessLookupError:  # gone already (and reaped below)
        process.wait(timeout=60)
        return
    for other in psutil.process_iter(["pid"]):
        try:
            if os.getsid(other.pid) == sid:
                os.kill(other.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.wait(timeout=60)


def curves(out):
    runs = json.loads((out / "results.json").read_text())["tasks"]["adding"]["runs"]
    return {(run["model"], run["length"]): run["history"] for run in runs}


def test_killed_driver_resumes_to_the_results_of_an_uninterrupted_run(tmp_path):
    """The reference runs in this process (no Ray) with a trial's thread settings; the Ray run
    is SIGKILLed once its first trial is written, then resumed: every learning curve equals
    the reference's (a trial in a Ray worker is the same computation), none trained twice."""
    lengths = ["--lengths", "5,6", "--variants", "lstm,gru"]
    reference = tmp_path / "reference"
    done = subprocess.run(
        [*COMMAND, *lengths, "--in-process", "--out", str(reference)],
        env={**ENV, **thread_env(1)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "ray"
    driver = subprocess.Popen(
        [*COMMAND, *lengths, "--out", str(out)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and driver.poll() is None:
            if (out / RESULTS).exists() and (out / RESULTS).read_text().count("\n") >= 1:
                break
            time.sleep(0.5)
    finally:
        end_session(driver)
    first = (out / RESULTS).read_text().count("\n")
    assert 1 <= first
    done = subprocess.run(
        [*COMMAND, *lengths, "--out", str(out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if first < 4:
        assert f"resuming: {first} of 4 runs are done already" in done.stdout
    assert (out / RESULTS).read_text().count("\n") == 4  # nothing trained twice
    assert curves(out) == curves(reference)


def test_a_worker_killed_mid_trial_is_retried_and_the_run_completes(tmp_path):
    out = tmp_path / "out"
    driver = subprocess.Popen(
        [*COMMAND, "--lengths", "5", "--variants", "lstm", "--steps", "400", "--out", str(out)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and driver.poll() is None:
            for process in psutil.Process(driver.pid).children(recursive=True):
                try:
                    if "_run_one" in " ".join(process.cmdline()) + process.name():
                        os.kill(process.pid, signal.SIGKILL)
                        killed = process.pid
                        break
                except psutil.Error:
                    pass
            time.sleep(0.2)
        output, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            end_session(driver)
    assert killed is not None, "no worker ran the trial"
    assert driver.returncode == 0, output[-3000:]
    (run,) = json.loads((out / "results.json").read_text())["tasks"]["adding"]["runs"]
    assert run["model"] == "lstm" and run["steps"] >= 10


def test_an_unreachable_address_fails_in_seconds_naming_it(tmp_path):
    start = time.monotonic()
    done = subprocess.run(
        [*COMMAND, "--address", "127.0.0.1:9", "--out", str(tmp_path / "out")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0] and "no Ray cluster" in lines[0]
    assert time.monotonic() - start < 120  # the import of TensorFlow included; no hang


def test_ray_missing_says_what_to_install(tmp_path):
    """With Ray hidden from the import system: one line naming what to install."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "ray.py").write_text("raise ImportError('no ray here')\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(hide), ENV.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [*COMMAND, "--lengths", "5", "--variants", "lstm", "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'pip install "keras-lstm-variants[examples]"' in lines[0]


LISTENING = """
import json, os, psutil
from keras_lstm_variants.commands.trials import start_ray
ray = start_ray(None, 1, cpus=1)
ray.get(ray.remote(lambda: os.getpid()).remote())  # a worker up too
me = psutil.Process()
found = set()
for process in [me, *me.children(recursive=True)]:
    try:
        for connection in process.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                found.add(connection.laddr.ip)
    except psutil.Error:
        pass
ray.shutdown()
print(json.dumps(sorted(found)))
"""


def test_the_embedded_ray_listens_on_loopback_only():
    """The default (no --address): every port Ray's processes listen on is on 127.0.0.1,
    none on another address (no dashboard, no job server)."""
    done = subprocess.run(
        [sys.executable, "-c", LISTENING], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found and set(found) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, found


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def records(out):
    path = out / RESULTS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_two_nodes_share_the_trials_and_losing_one_loses_no_trial(tmp_path):
    """A Ray cluster of two nodes on this machine (a head and a second node, one CPU each):
    ``compare --address 127.0.0.1:PORT`` spreads its trials over both (each trial's node is
    recorded), and SIGKILLing the second node mid-run still completes every trial.

    Ray (2.60) resolves a loopback address to the machine's own address for ``ray start`` and
    ``ray.init(address=...)`` of a multi-node cluster, so these two nodes listen there (only
    the embedded single-node Ray can be held to 127.0.0.1, tested above)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    cluster_env = {**ENV, "RAY_AUTH_MODE": "token"}  # the token in ~/.ray/auth_token
    start = ["ray", "start", "--block", "--num-cpus=1", "--disable-usage-stats"]
    head = subprocess.Popen(
        [*start, "--head", f"--port={port}", "--include-dashboard=false"],
        env=cluster_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    second = driver = None
    try:

        def answers():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(answers, 120, "the head node")
        second = subprocess.Popen(
            [*start, f"--address={address}"],
            env=cluster_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        count = (
            f"import ray; ray.init(address={address!r}, log_to_driver=False); "
            "print(sum(node['Alive'] for node in ray.nodes()))"
        )

        def two_nodes():
            done = subprocess.run(
                [sys.executable, "-c", count],
                env=cluster_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            return done.stdout.strip().splitlines()[-1:] == ["2"]

        wait_for(two_nodes, 180, "the second node")
        out = tmp_path / "out"
        lengths = ["--lengths", "5,6,7", "--variants", "lstm,gru", "--steps", "60"]
        driver = subprocess.Popen(
            [*COMMAND, *lengths, "--address", address, "--out", str(out)],
            env=cluster_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(
            lambda: len({r.get("node") for r in records(out)}) >= 2 or driver.poll() is not None,
            420,
            "trials on both nodes",
        )
        nodes = {r.get("node") for r in records(out)}
        assert len(nodes) >= 2, nodes
        end_session(second)
        output, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, output[-3000:]
        runs = json.loads((out / "results.json").read_text())["tasks"]["adding"]["runs"]
        assert len(runs) == 6 and len({run["node"] for run in runs}) >= 2
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait(timeout=60)
        for node in (second, head):
            if node is not None and node.poll() is None:
                end_session(node)

"""``compare``'s trials on Ray: resumable after the driver is killed, retried when a worker
dies, the same learning curves as in-process, and bad addresses refused in seconds.

Every process a test starts is ended by its PID (the driver's session, listed with psutil) or
with the network namespace it runs in; every subprocess has a timeout. Ray talks to loopback
addresses only: the embedded Ray's sockets and every address it connects to are checked, and
the two-node cluster runs in a network namespace whose only interface is loopback. The runs
are tiny (``--quick``, 10 steps).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
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
# The trials' plumbing on the README's backend: on another one, compare imports TensorFlow only
# later (for TensorBoard), after the launcher has stopped filtering its start-up lines.
ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "CUDA_VISIBLE_DEVICES": "",
    "KERAS_BACKEND": "tensorflow",
}
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


def refusal(arguments, env=ENV):
    """The one line ``compare`` with ``arguments`` writes to stderr as it exits with 2."""
    done = subprocess.run(
        [*COMMAND, *arguments], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_an_unreachable_address_fails_in_seconds_naming_it(tmp_path):
    start = time.monotonic()
    line = refusal(["--address", "127.0.0.1:9", "--out", str(tmp_path / "out")])
    assert "127.0.0.1:9" in line and "no Ray cluster" in line
    assert time.monotonic() - start < 120  # the import of TensorFlow included; no hang


def test_ray_missing_says_what_to_install(tmp_path):
    """With Ray hidden from the import system: one line naming what to install."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "ray.py").write_text("raise ImportError('no ray here')\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(hide), ENV.get("PYTHONPATH", "")])}
    arguments = ["--lengths", "5", "--variants", "lstm", "--out", str(tmp_path / "out")]
    assert 'pip install "keras-lstm-variants[examples]"' in refusal(arguments, env)


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

#: The embedded Ray's sockets (``two_node_cluster.sockets`` of this process and all it started).
LISTENING = f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})"
LISTENING += """
import json, os, psutil
from keras_lstm_variants.commands.trials import start_ray
from two_node_cluster import sockets
ray = start_ray(None, 1, cpus=1)
ray.get(ray.remote(lambda: os.getpid()).remote())  # a worker up too
me = psutil.Process()
listening, remote = sockets([me, *me.children(recursive=True)])
ray.shutdown()
print(json.dumps([listening, remote]))
"""


def test_the_embedded_ray_listens_on_loopback_only():
    """The default (no --address): every port Ray's processes listen on is on 127.0.0.1,
    none on another address (no dashboard, no job server), and every address they are
    connected to is a loopback one."""
    done = subprocess.run(
        [sys.executable, "-c", LISTENING], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    listening, remote = json.loads(done.stdout.strip().splitlines()[-1])
    assert listening and set(listening) <= LOOPBACK, listening
    assert remote and set(remote) <= LOOPBACK, remote


#: An address a traced process sent to or connected to (IPv4 or IPv6, as strace writes it).
TRACED = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


def test_the_embedded_ray_connects_to_loopback_only(tmp_path):
    """Every address the embedded Ray's processes connect or send to (strace of every
    ``connect``, ``sendto`` and ``sendmsg`` of the driver and all it starts) is a loopback
    one: no DNS query and no cloud-metadata request (Ray's usage-stats module asks
    169.254.169.254 and metadata.google.internal which cloud it runs on, usage stats on or
    off, unless held to loopback as ``start_ray`` does)."""
    if not shutil.which("strace"):
        pytest.skip("needs strace")
    log = tmp_path / "strace.log"
    trace = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-e", "signal=none"]
    done = subprocess.run(
        [*trace, "-o", str(log), sys.executable, "-c", LISTENING],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode and "ptrace" in done.stderr and not log.exists():
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    addresses = {a or b for a, b in TRACED.findall(log.read_text())}
    assert "127.0.0.1" in addresses  # the trace saw Ray's own connections
    assert addresses <= LOOPBACK, addresses - LOOPBACK


#: Fresh network, PID and mount namespaces: the cluster's only interface is loopback, and every
#: process in them dies with their PID 1 (``--kill-child``: when ``unshare`` is killed).
NAMESPACES = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
if hasattr(os, "geteuid") and os.geteuid() != 0:
    NAMESPACES.insert(1, "--map-root-user")  # a user namespace, where the kernel allows one


def namespaces_refused():
    """Why this machine cannot make the namespaces (None: it can)."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs util-linux's unshare and iproute2's ip"
    try:
        done = subprocess.run(
            [*NAMESPACES, "ip", "link", "set", "lo", "up"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare failed: {error}"
    if done.returncode:
        return f"unshare refused ({done.stderr.strip()[-300:]})"
    return None


def test_two_nodes_share_the_trials_and_losing_one_loses_no_trial(tmp_path):
    """A Ray cluster of two nodes (a head and a second node, one CPU each):
    ``compare --address 127.0.0.1:PORT`` spreads its trials over both (each trial's node is
    recorded), and SIGKILLing the second node mid-run still completes every trial.

    Ray maps a loopback node address to the machine's own address where it expects a cluster,
    so the cluster, ``compare`` and everything they start run in network namespaces of their
    own (``tests/two_node_cluster.py``, PID 1 there) whose only interface is loopback: every
    node is at 127.0.0.1 and no packet leaves it. Skipped where namespaces are refused."""
    refused = namespaces_refused()
    if refused:
        pytest.skip(f"a network namespace is needed to keep the cluster on loopback: {refused}")
    out = tmp_path / "out"
    script = os.path.join(os.path.dirname(__file__), "two_node_cluster.py")
    temp = tempfile.mkdtemp(prefix="klv-ray-")  # Ray's sessions; short, for its socket paths
    try:
        done = subprocess.run(
            [*NAMESPACES, sys.executable, script, str(out), temp],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=900,  # then unshare is SIGKILLed, and with it every process in the namespaces
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in report, (report, done.stderr[-3000:])
    assert report["pid"] == 1  # the namespaces' first process: its exit ends all of them
    addresses = {a for addresses in report["interfaces"].values() for a in addresses}
    assert addresses <= LOOPBACK, report["interfaces"]
    assert report["listening"] and set(report["listening"]) <= LOOPBACK, report["listening"]
    assert set(report["remote"]) <= LOOPBACK, report["remote"]
    nodes = report["nodes_before_kill"]
    assert len(nodes) >= 2 and all(node.startswith("127.0.0.1 ") for node in nodes), nodes
    assert report["trials_before_kill"] < 6  # the second node died mid-run
    assert report["returncode"] == 0, report["output"]
    runs = json.loads((out / "results.json").read_text())["tasks"]["adding"]["runs"]
    assert len(runs) == 6 and len({run["node"] for run in runs}) >= 2
    assert (out / RESULTS).read_text().count("\n") == 6  # each trial recorded once

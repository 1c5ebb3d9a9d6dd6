"""A two-node Ray cluster and a ``compare`` run on it, inside a network namespace of its own.

Run by ``tests/test_trials.py`` as PID 1 of fresh network, PID and mount namespaces::

    unshare --net --pid --fork --mount-proc --kill-child python tests/two_node_cluster.py OUT TEMP

The namespace's only interface is loopback (brought up here), so every Ray process can only
bind to and talk to 127.0.0.1: no packet leaves it. It starts a head node and a second node
(``ray start --node-ip-address=127.0.0.1``, one CPU each, their session files in ``TEMP``, an
empty directory with a short path: Ray's socket paths must fit 107 bytes), runs
``compare --address 127.0.0.1:PORT`` into ``OUT``, SIGKILLs the second node (its ``ray start``
and every process under it, by PID) once trials have finished on both nodes, waits for
``compare`` to end, and prints one JSON line: what it saw. Every process left is killed by the
namespace's teardown when this process (its PID 1) exits; the test's timeout kills
``unshare``, which kills this process (``--kill-child``).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil

PORT = 6379  # the namespace's own port space: nothing else listens in it
ADDRESS = f"127.0.0.1:{PORT}"
TINY = ["--quick", "--task", "adding", "--steps", "60", "--eval-every", "10"]
TINY += ["--no-export", "--no-tensorboard", "--units", "4"]
TINY += ["--lengths", "5,6,7", "--variants", "lstm,gru"]
LAUNCH = "import sys; from keras_lstm_variants_launcher import main; sys.exit(main())"


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def answers(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def records(out):
    path = os.path.join(out, "trials.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def sockets(processes=None):
    """The local addresses listened on, and the remote addresses talked to, by ``processes``
    (default: every process of this namespace, whose /proc holds only them), sorted."""
    listening, remote = set(), set()
    for process in psutil.process_iter() if processes is None else processes:
        try:
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN:
                    listening.add(connection.laddr.ip)
                if connection.raddr:
                    remote.add(connection.raddr.ip)
        except psutil.Error:
            pass
    return sorted(listening), sorted(remote)


def kill_tree(process):
    """SIGKILL ``process`` and every process under it, by PID."""
    try:
        tree = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in tree:
        try:
            os.kill(member.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main(out, temp):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    report = {
        "pid": os.getpid(),
        "interfaces": {
            name: sorted(a.address for a in addresses if a.family.name in ("AF_INET", "AF_INET6"))
            for name, addresses in psutil.net_if_addrs().items()
        },
    }
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # the token in ~/.ray/auth_token
    start = ["ray", "start", "--block", "--num-cpus=1", "--disable-usage-stats"]
    start += ["--node-ip-address=127.0.0.1", f"--temp-dir={temp}"]
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    head = subprocess.Popen(
        [*start, "--head", f"--port={PORT}", "--include-dashboard=false"], **quiet
    )
    count = (
        f"import ray; ray.init(address={ADDRESS!r}, log_to_driver=False); "
        "print(sum(node['Alive'] for node in ray.nodes()))"
    )

    def alive():
        done = subprocess.run(
            [sys.executable, "-c", count], env=env, capture_output=True, text=True, timeout=120
        )
        return int((done.stdout.strip().splitlines() or ["0"])[-1])

    second = driver = None
    try:
        wait_for(lambda: answers(PORT), 120, "the head node")
        second = subprocess.Popen([*start, f"--address={ADDRESS}"], **quiet)
        wait_for(lambda: alive() == 2, 180, "the second node")
        driver = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "compare", *TINY, "--address", ADDRESS, "--out", out],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(
            lambda: len({r.get("node") for r in records(out)}) >= 2 or driver.poll() is not None,
            420,
            "trials on both nodes",
        )
        report["listening"], report["remote"] = sockets()
        report["nodes_before_kill"] = sorted({r.get("node") for r in records(out)})
        report["trials_before_kill"] = len(records(out))
        kill_tree(psutil.Process(second.pid))
        second.wait(timeout=60)
        output, _ = driver.communicate(timeout=600)
        report["returncode"], report["output"] = driver.returncode, output[-3000:]
    except Exception as error:  # reported: the test shows it
        report["error"] = f"{type(error).__name__}: {error}"
    finally:
        for process in (driver, second, head):
            if process is not None and process.poll() is None:
                kill_tree(psutil.Process(process.pid))
                process.wait(timeout=60)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Independent trials on Ray: every core here by default, a cluster when given its address.

:func:`run_trials` runs ``trial_fn(config)`` once per config and returns one record per config.
Each config is a JSON-able dict; its *id* is a hash of its JSON, so the same config is the same
trial in every run. A record is appended to ``<out_dir>/trials.jsonl`` (one JSON line,
flushed and fsynced) the moment its trial ends, so a run killed at any point keeps every
finished trial, and a later call with the same ``out_dir`` (``resume=True``) skips them::

    from keras_lstm_variants.commands.trials import run_trials

    def square(config):  # module level: Ray workers import it by name
        return {"y": config["x"] ** 2}

    records = run_trials(square, [{"x": 1}, {"x": 2}], "out")
    [record["result"]["y"] for record in records]  # [1, 4]

A record is ``{"id", "config", "result", "node", "pid", "seconds"}``, or ``{"id", "config",
"error"}`` (one line) when the trial raised: a failing trial is reported, never the end of the
run; the next resume runs it again.

Engines: ``"ray"`` (the default) submits each trial as a Ray task needing ``threads`` CPUs
(and ``gpus``, a fraction of a GPU, where the node has one), so as many run at once as the
cluster's cores allow; Ray retries a trial whose worker process or node died
(``max_retries``). Without ``address`` (or ``RAY_ADDRESS``) it starts an embedded Ray on this
machine with no dashboard, and stops it at the end. ``"inline"`` runs the trials one after
another in this process (no Ray; debugging, and the reference a Ray trial is tested against).

Why Ray's tasks and not Ray Tune's ``Tuner``: a trial here is one function call with a result
at its end (no intermediate reports, schedulers or early stopping across trials), and the
results file is the single record of what finished. Tasks give what the trials need from Ray
(per-trial resources, placement across nodes, retry on a lost worker or node) without a second
experiment state (Tune's) to keep consistent with that file; a study that wants Tune's search
spaces draws its configs with them and runs them here.
"""

import argparse
import contextlib
import hashlib
import json
import os
import socket
import sys
import time

#: The file of finished trials in ``out_dir``: one JSON record per line.
RESULTS = "trials.jsonl"
#: What to install when Ray is missing.
INSTALL = 'pip install "keras-lstm-variants[examples]" (or pip install "ray[tune]")'


class TrialsError(Exception):
    """The trials cannot start (Ray missing, an address that does not answer): one line."""


def trial_id(config):
    """A stable id of ``config``: the first 16 hex digits of the SHA-1 of its sorted JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def thread_env(threads):
    """Environment variables that hold one trial's TensorFlow, XLA and OpenMP pools to
    ``threads`` threads (set before the backend loads, in every worker)."""
    n = str(int(threads))
    return {
        "OMP_NUM_THREADS": n,
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": n,
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}",
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }


def read_records(out_dir):
    """The records in ``out_dir``'s results file, by id (a torn last line is ignored)."""
    records = {}
    try:
        with open(os.path.join(out_dir, RESULTS)) as file:
            for line in file:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                records[record["id"]] = record
    except FileNotFoundError:
        pass
    return records


def append_record(out_dir, record):
    """Append ``record`` as one line to the results file, on disk before this returns."""
    with open(os.path.join(out_dir, RESULTS), "a") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())


def _run_one(trial_fn, config, threads):
    """One trial, in a Ray worker or in this process: its result and where it ran."""
    start = time.perf_counter()
    try:
        import tensorflow as tf  # only where installed: its pools, if not yet started

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except (ImportError, RuntimeError):
        pass
    result = trial_fn(config)
    node = socket.gethostname()
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            context = ray.get_runtime_context()
            node = f"{ray.util.get_node_ip_address()} {context.get_node_id()[:8]}"
    return {"result": result, "node": node, "pid": os.getpid(), "seconds": _since(start)}


def _since(start):
    return time.perf_counter() - start


def check_address(address, timeout=5.0):
    """Raise :class:`TrialsError` naming ``address`` unless something answers there."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as error:
        raise TrialsError(
            f"--address {address}: no Ray cluster answers there ({error}); start one with "
            "`ray start --head` or leave --address out for a local Ray"
        ) from None


def start_ray(address, threads, cpus=None):
    """Connect to the cluster at ``address`` (or ``RAY_ADDRESS``), or start an embedded Ray
    here: every core, no dashboard, every server bound to 127.0.0.1 (:func:`_loopback_only`),
    workers' threads set by :func:`thread_env`."""
    address = address or os.environ.get("RAY_ADDRESS")
    local = not address or address == "local"
    with _loopback_only(local):
        try:
            import ray
        except ImportError:
            raise TrialsError(f"the trials run on Ray, which is not installed: {INSTALL}") from None
        env = {"env_vars": thread_env(threads)}
        if not local:
            check_address(address)
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(
                address="local",
                num_cpus=cpus or len(os.sched_getaffinity(0)),
                include_dashboard=False,
                runtime_env=env,
                log_to_driver=False,
            )
    return ray


@contextlib.contextmanager
def _loopback_only(local):
    """While an embedded Ray starts: its node address is 127.0.0.1, so its GCS, raylet,
    object manager, agents and workers listen on the loopback interface only. Ray does this
    by itself where it does not expect a cluster (macOS, Windows); the switch is Ray's
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (read at import, and by the processes Ray
    starts, which inherit it). Its API server is held to loopback too
    (:func:`_no_cloud_probes`)."""
    if not local:
        yield
        return
    with _no_cluster(), _no_cloud_probes():
        yield


@contextlib.contextmanager
def _no_cloud_probes():
    """Start Ray's API server ("dashboard" process; without the dashboard it runs only the
    usage-stats module) with an HTTP(S) proxy at a closed loopback port for every host but
    loopback. That module asks the cloud metadata services (``http://169.254.169.254/...``,
    ``metadata.google.internal``, a DNS query) which cloud it runs on, usage stats on or off;
    through the proxy those requests fail at once on 127.0.0.1 and leave nothing but "unknown"
    (its gRPC to the GCS on 127.0.0.1 bypasses the proxy: ``no_proxy``). Only that process
    gets the proxy: the GCS, raylet and workers keep the caller's environment."""
    try:
        import ray._private.services as services
    except ImportError:  # no Ray: the caller says what to install
        services = None
    original = getattr(services, "start_api_server", None)
    if original is None:  # no Ray, or another Ray's layout: nothing to wrap
        yield
        return

    def start_api_server(*args, **kwargs):
        saved = {name: os.environ.get(name) for name in _DEAD_PROXY}
        os.environ.update(_DEAD_PROXY)
        try:
            return original(*args, **kwargs)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    services.start_api_server = start_api_server
    try:
        yield
    finally:
        services.start_api_server = original


#: A proxy where nothing listens (port 9, "discard"), for every host but loopback.
_DEAD_PROXY = {
    **dict.fromkeys(
        ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"], "http://127.0.0.1:9"
    ),
    **dict.fromkeys(["no_proxy", "NO_PROXY"], "127.0.0.1,localhost,::1"),
}


@contextlib.contextmanager
def _no_cluster():
    """``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` while Ray starts (see :func:`_loopback_only`)."""
    saved = os.environ.get(_NO_CLUSTER)
    os.environ[_NO_CLUSTER] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    saved_constant = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None:  # Ray imported already: its constant is read at each call
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_NO_CLUSTER, None)
        else:
            os.environ[_NO_CLUSTER] = saved
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:  # as Ray would have read it without the switch
            default = sys.platform not in ("darwin", "win32")
            if saved_constant is None:
                saved_constant = default if saved is None else saved.lower() in ("1", "true")
            constants.ENABLE_RAY_CLUSTER = saved_constant


_NO_CLUSTER = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class Progress:
    """One live line for the whole run: trials done, running and left, and the ETA."""

    def __init__(self, total, done, stream=sys.stderr):
        self.total, self.done, self.start, self.finished = total, done, time.perf_counter(), 0
        self.stream, self.tty, self.last = stream, stream.isatty(), None

    def show(self, running):
        left = self.total - self.done - running
        elapsed = _since(self.start)
        eta = ""
        if self.finished:
            remaining = elapsed / self.finished * (self.total - self.done)
            eta = f", ETA {remaining / 60:.1f} min"
        counts = f"trials: {self.done}/{self.total} done, {running} running, {left} left"
        text = counts + eta
        if self.tty:
            self.stream.write("\r" + text.ljust(70))
        elif counts != self.last:  # a log file gets a line per change, not per tick
            self.stream.write(text + "\n")
        self.last = counts
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_trials(
    trial_fn,
    configs,
    out_dir,
    *,
    address=None,
    resume=True,
    threads=1,
    gpus=None,
    engine="ray",
    max_retries=3,
    on_record=None,
    cpus=None,
):
    """Run ``trial_fn(config)`` for each of ``configs``; return their records, in order.

    Args:
        trial_fn: a module-level function ``config -> JSON-able result``.
        configs: JSON-able dicts; equal configs are one trial.
        out_dir: an existing directory; ``trials.jsonl`` there holds the finished trials.
        address: a Ray cluster's ``host:port`` (default ``RAY_ADDRESS``, else a local Ray).
        resume: skip the trials ``out_dir`` holds already (else start that file afresh).
        threads: CPUs (and TensorFlow/XLA/OpenMP threads) of one trial.
        gpus: the fraction of a GPU one trial takes (Ray's ``num_gpus``); None: none.
        engine: ``"ray"`` or ``"inline"`` (in this process, one after another).
        max_retries: Ray's retries of a trial whose worker or node died.
        on_record: called with each new record as its trial ends (printing, reports).
        cpus: the embedded Ray's CPUs (default: every core this process may use).

    Raises:
        TrialsError: Ray is missing, or ``address`` does not answer (within seconds).
    """
    if resume:
        done = read_records(out_dir)
    else:
        open(os.path.join(out_dir, RESULTS), "w").close()
        done = {}
    ids = [trial_id(config) for config in configs]
    by_id = dict(zip(ids, configs, strict=True))
    finished = {i: r for i, r in done.items() if i in by_id and "result" in r}
    todo = [i for i in dict.fromkeys(ids) if i not in finished]
    progress = Progress(len(by_id), len(finished))

    def record_of(i, outcome=None, error=None):
        record = {"id": i, "config": by_id[i]}
        record.update(outcome if error is None else {"error": error})
        append_record(out_dir, record)
        if "result" in record:
            finished[i] = record
        progress.done += 1
        progress.finished += 1
        if on_record:
            on_record(record)
        return record

    failed = {}
    if engine == "inline":
        for i in todo:
            progress.show(1)
            try:
                outcome = _run_one(trial_fn, by_id[i], threads)
            except Exception as error:  # a failing trial is reported, the others go on
                failed[i] = record_of(i, error=_one_line(error))
                continue
            record_of(i, outcome)  # outside the try: on_record's own errors are not the trial's
    elif todo:
        ray = start_ray(address, threads, cpus)
        try:
            options = {"num_cpus": threads, "max_retries": max_retries}
            if gpus and ray.cluster_resources().get("GPU"):
                options["num_gpus"] = gpus
            remote = ray.remote(**options)(_run_one)
            capacity = max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
            pending = {remote.remote(trial_fn, by_id[i], threads): i for i in todo}
            while pending:
                progress.show(min(len(pending), capacity))
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as error:
                        failed[i] = record_of(i, error=_one_line(error))
                        continue
                    record_of(i, outcome)
        except KeyboardInterrupt:
            for ref in list(locals().get("pending", {})):
                ray.cancel(ref, force=True)
            raise
        finally:
            ray.shutdown()
    progress.close()
    return [finished.get(i) or failed.get(i) for i in ids]


def add_trial_arguments(parser, description):
    """Add the ``trials`` group of a command's options to ``parser``: ``--address``,
    ``--resume``, ``--threads``, ``--gpus-per-trial`` and ``--in-process``, the flags of
    :func:`run_trials` (``description`` says what one trial of that command is)."""
    trials = parser.add_argument_group("trials", description)
    trials.add_argument(
        "--address",
        help="a Ray cluster's host:port to run the trials on (default: RAY_ADDRESS, else an "
        "embedded Ray on this machine using every core)",
    )
    trials.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip the trials --out holds already (default: on; --no-resume starts afresh)",
    )
    trials.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of one trial; trials at once = cores / threads (default: %(default)s)",
    )
    trials.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.25,
        help="the fraction of a GPU one trial takes where the node has a GPU "
        "(default: %(default)s)",
    )
    trials.add_argument(
        "--in-process",
        action="store_true",
        help="run the trials one after another in this process, without Ray",
    )


def trial_arguments(args):
    """The keyword arguments of :func:`run_trials` that :func:`add_trial_arguments`'s options
    give, checked: a :class:`~keras_lstm_variants.commands.cli.UsageError` naming the option
    for ``--threads`` below 1 or ``--gpus-per-trial`` outside [0, 1]."""
    from .cli import UsageError

    if args.threads < 1:
        raise UsageError(f"--threads: must be a positive integer; received {args.threads}")
    if not 0 <= args.gpus_per_trial <= 1:
        raise UsageError(f"--gpus-per-trial: must be from 0 to 1; received {args.gpus_per_trial}")
    return {
        "address": args.address,
        "resume": args.resume,
        "threads": args.threads,
        "gpus": args.gpus_per_trial or None,
        "engine": "inline" if args.in_process else "ray",
    }


def _one_line(error):
    """The last line of ``error``'s message (Ray wraps a trial's error in its traceback)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:500]

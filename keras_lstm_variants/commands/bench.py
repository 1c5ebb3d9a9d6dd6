"""``keras-lstm-variants bench``: every variant against the stock Keras layer, side by side.

For each shape (by default batch 64 x 100 steps x 64 features x 256 units, and the long case
16 x 1000 x 32 x 128) the command builds, for each variant, our sequence layer and its stock
counterpart (``keras.layers.LSTM`` for the LSTM family, ``keras.layers.GRU`` for GRU), each
with and without ``jit_compile``, and times ``train_on_batch`` and ``predict_on_batch``. The
models are *interleaved*: every repeat visits every model once, so a noisy neighbour slows
them all alike, and the minimum over the repeats is reported. The first call of each model
(tracing, plus XLA compilation under ``jit_compile``) is timed separately; for the XLA models
``first call - steady step`` is the compile time. The JSON also holds the minimum CPU time of
each call (summed over threads): CPU / wall tells how many cores a model kept busy.

Variants are spec strings (:mod:`keras_lstm_variants.specs`): ``lstm``, ``greff:NIG``,
``lstm+layer_norm``, ``lstm+proj_units=64``; the stock layer of the family is the baseline.

Throughput counts the GEMMs only, read off the built cell rather than assumed: one step costs
``2 B (rows x columns)`` flops for every matrix weight of the cell (``kernel``,
``recurrent_kernel``, a projection, ...), or what the cell's own ``flops_per_step(batch)``
says where it has one (a cell whose step does more than products with its weights, e.g. a
matrix memory). For an LSTM with ``G`` fused gate blocks that is ``2 B T (F + U) G U`` per
forward pass; a training step costs three times the forward pass (the backward pass does two
GEMMs per forward GEMM). Achieved GFLOP/s is compared with a float32
GEMM peak measured here: the faster of NumPy and TensorFlow on an ``n x n x n`` product.

Memory: each measurement runs in a fresh subprocess (``python -m
keras_lstm_variants.commands.bench_memory SPEC``). It builds the model, resets the kernel's
peak-RSS mark (writing ``5`` to ``/proc/self/clear_refs``), makes one call and reports the
peak RSS (``VmHWM``) and the RSS just before the call (``VmRSS``). Their difference is what
the call needed: tracing (constant in the sequence length) plus the tensors of the step. A
second call would understate it: the allocator keeps the first call's freed memory.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

from .bench_anchors import ANCHORS, TorchAnchor, anchors_in_subprocess, exit_status  # noqa: F401
from .bench_memory import bench_memory
from .bench_tables import format_backends, format_memory, format_table, format_versions
from .bench_timing import (  # noqa: F401  (re-exported: the names the tests use)
    DEFAULT_SHAPE,
    LONG_SHAPE,
    Shape,
    bench_shape,
    build_model,
    compare,
    cores,
    current_backend,
    device_description,
    forward_flops,
    gemm_peak,
    progress,
    step_flops,
    stock_of,
    target,
    versions,
    with_stock,
)
from .cli import UsageError


def positive_ints(name, text):
    """Parse a comma-separated list of positive integers, or raise naming the argument."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        values = [0]
    if any(value <= 0 for value in values):
        raise UsageError(f"--{name} takes comma-separated positive integers; received {text!r}")
    return values


def configure(parser):
    shape = parser.add_argument_group(
        "shape",
        f"batch x time x features x units: any of these gives one shape (unset ones from "
        f"{DEFAULT_SHAPE}); none gives the default {DEFAULT_SHAPE} plus the long case {LONG_SHAPE}",
    )
    for name in ("batch", "time", "features", "units"):
        shape.add_argument(f"--{name}", type=int, metavar="N")
    parser.add_argument(
        "--repeats",
        type=int,
        default=10,
        metavar="N",
        help="timed calls per model; the minimum is reported (default 10)",
    )
    parser.add_argument(
        "--variants",
        default="lstm,peephole,cifg,gru",
        metavar="LIST",
        help="comma-separated variant specs name[:variant][+option[=value]], e.g. "
        "'lstm,greff:NIG,lstm+layer_norm,lstm+proj_units=64' (default: lstm,peephole,cifg,gru)",
    )
    parser.add_argument(
        "--backend",
        metavar="LIST",
        help="comma-separated Keras backends (tensorflow, jax, torch), each measured in its own "
        "subprocess on whatever device it sees (default: the current KERAS_BACKEND, in this "
        "process)",
    )
    parser.add_argument(
        "--anchors",
        default="torch",
        metavar="torch|none",
        help="time torch.nn.LSTM / torch.nn.GRU (cuDNN on a GPU, oneDNN on a CPU) beside ours, "
        "where torch is installed (default torch)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        metavar="N",
        help="torch.set_num_threads for the anchors (default: the cores this process may use)",
    )
    parser.add_argument(
        "--no-jit",
        action="store_true",
        help="skip the jit_compile=True models (on JAX, where only jit is measured, keep it)",
    )
    parser.add_argument(
        "--sections",
        default="speed,memory",
        metavar="LIST",
        help="what to measure: speed, memory or both (default speed,memory)",
    )
    parser.add_argument(
        "--json",
        default="bench.json",
        metavar="PATH",
        help="where to write the results (default bench.json)",
    )
    parser.add_argument(
        "--gemm-size",
        type=int,
        default=2048,
        metavar="N",
        help="n of the n x n x n float32 GEMM that measures the peak (default 2048)",
    )
    parser.add_argument(
        "--memory-steps",
        default="250,500,1000",
        metavar="LIST",
        help="sequence lengths of the long case whose training-step peak RSS is "
        "measured, each in a subprocess ('' skips; default 250,500,1000)",
    )
    parser.add_argument(
        "--inference-steps",
        type=int,
        default=10000,
        metavar="N",
        help="steps of the long-inference memory check (0 skips; default 10000)",
    )
    parser.add_argument(
        "--inference-units",
        type=int,
        default=256,
        metavar="N",
        help="units of the long-inference memory check (default 256)",
    )


BACKENDS = ("tensorflow", "jax", "torch")


#: ``jit_compile`` settings measured per backend. On JAX, ``jit_compile=False`` runs every op
#: eagerly (one dispatch per op per step, seconds per batch: nobody trains that way, and Keras's
#: default there is jit); on torch, ``jit_compile=True`` is ``torch.compile`` (Inductor), which
#: failed to build the loop's kernels here (docs/speed.md), and Keras's default there is eager.
JIT_MODES = {"tensorflow": (False, True), "jax": (True,), "torch": (False,)}


def parse(args):
    """Validate every argument before any work; return the plan (a dict)."""
    numbers = ("batch", "time", "features", "units", "repeats", "gemm_size", "inference_units")
    for name in (*numbers, "torch_threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(
                f"--{name.replace('_', '-')} must be a positive integer; received {value}"
            )
    if args.inference_steps < 0:
        raise UsageError(f"--inference-steps must be >= 0; received {args.inference_steps}")
    check_output_path("--json", args.json)
    custom = {name: getattr(args, name) for name in ("batch", "time", "features", "units")}
    if any(value is not None for value in custom.values()):
        shapes = [Shape(**{k: v or getattr(DEFAULT_SHAPE, k) for k, v in custom.items()})]
    else:
        shapes = [DEFAULT_SHAPE, LONG_SHAPE]
    sections = {name.strip() for name in args.sections.split(",") if name.strip()}
    if not sections or not sections <= {"speed", "memory"}:
        raise UsageError(f"--sections takes speed and/or memory; received {args.sections!r}")
    # every units a spec will be built with: the shapes', the long case's (memory) and the
    # long-inference check's
    units = {shape.units for shape in shapes} if "speed" in sections else set()
    if "memory" in sections:
        units |= {LONG_SHAPE.units} | ({args.inference_units} if args.inference_steps else set())
    variants = parse_variants(args.variants, units)
    return {
        "shapes": shapes,
        "variants": variants,
        "lengths": positive_ints("memory-steps", args.memory_steps),
        "sections": sections,
        "backends": parse_backends(args.backend),
        "anchors": parse_anchors(args.anchors),
    }


def parse_backends(text):
    """``--backend``: Keras backends, each installed; default the current one."""
    if text is None:
        return [current_backend()]
    backends = [name.strip() for name in text.split(",") if name.strip()]
    if not backends or not set(backends) <= set(BACKENDS) or len(set(backends)) < len(backends):
        raise UsageError(
            f"--backend takes comma-separated names from {', '.join(BACKENDS)}; received {text!r}"
        )
    missing = [name for name in backends if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"--backend {','.join(missing)}: not installed (pip install {missing[0]})")
    return backends


def parse_anchors(text):
    """``--anchors``: ``torch`` (``torch.nn.LSTM``/``GRU`` rows where torch is installed) or
    ``none``."""
    if text not in ("torch", "none"):
        raise UsageError(f"--anchors takes torch or none; received {text!r}")
    if text == "torch" and importlib.util.find_spec("torch") is None:
        return []
    return [] if text == "none" else ["torch"]


def parse_variants(text, units=(DEFAULT_SHAPE.units,)):
    """The spec strings of ``--variants``, each built once at every ``units`` it will be
    measured with, so that a bad name or option fails here, before any measurement; raise
    naming the argument."""
    from .specs import check_specs

    specs = [spec.strip() for spec in text.split(",") if spec.strip()]
    if not specs:
        raise UsageError(f"--variants takes comma-separated variant specs; received {text!r}")
    try:
        check_specs(specs, units)
    except ValueError as error:
        raise UsageError(f"--variants: {error}") from None
    if len(set(specs)) != len(specs):
        raise UsageError(f"--variants names a spec twice; received {text!r}")
    return specs


def check_output_path(option, path):
    """Raise naming ``option`` unless ``path`` can be written as a new or replaced file."""
    if not path:
        raise UsageError(f"{option} needs a file path; received {path!r}")
    if os.path.isdir(path):
        raise UsageError(f"{option}: {path} is a directory; give a file path")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{option}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{option}: {path} is not writable")


def measure(plan, args, sink=None):
    """Everything ``plan`` asks for, on the current backend, in this process: one run.
    ``sink(run)`` gets the run so far after every measurement (written at once: an
    interruption or a crash keeps what was measured)."""
    backend = current_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # one retracing warning per model otherwise
    anchors = plan["anchors"]
    threads = args.torch_threads or cores()
    started, load_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), os.getloadavg()
    one = {
        "backend": backend,
        "device": device_description(),
        "versions": versions(),
        "cores": cores(),
        "torch_threads": threads if anchors else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "started": started,
        "repeats": args.repeats,
        "gemm_gflops": {},
        "gemm_size": args.gemm_size,
        "peak_gflops": None,
        "records": [],
        "comparisons": [],
        "memory": [],
        "errors": [],
    }
    done = []  # the records of the finished shapes

    def update(records=(), memory=None):
        one["records"] = done + list(records)
        one["comparisons"] = [{"backend": backend, **row} for row in compare(one["records"])]
        if memory is not None:
            one["memory"] = [{"backend": backend, **m} for m in memory]
        one["load_average_before_after"] = [load_before, os.getloadavg()]
        if sink:
            sink(one)

    jit_modes = JIT_MODES[backend]
    if args.no_jit:
        jit_modes = tuple(mode for mode in jit_modes if not mode) or jit_modes
    if "speed" in plan["sections"]:
        progress(f"{backend}: GEMM peak: {args.gemm_size}^3 float32")
        one["gemm_gflops"] = gemm_peak(args.gemm_size)
        peak = one["peak_gflops"] = max(one["gemm_gflops"].values())
        for shape in plan["shapes"]:
            kinds = with_stock(plan["variants"])
            done += bench_shape(shape, kinds, jit_modes, args.repeats, peak, on_repeat=update)
            if "torch" in anchors:
                kinds = sorted({ANCHORS[stock_of(spec)] for spec in plan["variants"]})
                progress(f"{shape}: {', '.join(kinds)} in their own process")
                records, error = anchors_in_subprocess(
                    asdict(shape), kinds, args.repeats, peak, threads
                )
                done += records
                if error:
                    progress(error)
                    one["errors"].append(error)
            update()
    if "memory" in plan["sections"]:
        bench_memory(
            plan["variants"],
            plan["lengths"],
            args.inference_steps,
            args.inference_units,
            on_result=lambda memory: update(memory=memory),
        )
    update()
    return one


def write_json(path, data):
    """Write ``data`` to ``path`` through a temporary file: a reader never sees half of it."""
    with open(path + ".tmp", "w") as file:
        json.dump(data, file, indent=1)
    os.replace(path + ".tmp", path)


def measure_in_subprocess(plan, args, backend, sink=None):
    """:func:`measure` under ``KERAS_BACKEND=backend`` in a fresh interpreter. The child
    writes its run after every measurement; what it wrote is kept when it fails, is
    interrupted or dies by a signal (then ``error`` says so in one line)."""
    progress(f"{backend}: starting its own process")
    with tempfile.TemporaryDirectory() as directory:
        output = os.path.join(directory, "run.json")
        request = {"args": vars(args), "output": output}
        env = {**os.environ, "KERAS_BACKEND": backend}
        command = [sys.executable, "-m", __name__, json.dumps(request)]
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        try:
            code = child.wait()
        except KeyboardInterrupt:  # the child got the Ctrl-C too: let it write and exit
            child.wait()
            raise
        finally:
            one = {"backend": backend}
            if os.path.exists(output):
                with open(output) as file:
                    one = json.load(file)
            if sink:
                sink(one)
        if code != 0:
            one["error"] = f"the {backend} process {exit_status(code)}"
            if sink:
                sink(one)
        return one


def run(args):
    # OMP_WAIT_POLICY is left as the user set it (recorded in the JSON): PASSIVE rescues torch's
    # 2-thread pool on a loaded machine but made torch.nn.LSTM 1.3-6x slower on the idle one
    # (docs/speed.md, "PyTorch's threads").
    plan = parse(args)
    runs, write_errors = [], []

    def save(one, position):
        """Keep ``one`` as run ``position`` and write everything measured so far; a failing
        disk is said once and the measuring goes on (the tables still reach stdout)."""
        runs[position:] = [one]
        try:
            write_json(args.json, {"runs": runs})
            write_markdown(markdown_path(args.json), runs)
        except OSError as error:
            if not write_errors:
                print(f"bench: cannot write {args.json}: {error}", file=sys.stderr, flush=True)
            write_errors.append(error)

    try:
        if plan["backends"] == [current_backend()]:
            measure(plan, args, sink=lambda one: save(one, 0))
        else:
            for position, backend in enumerate(plan["backends"]):
                measure_in_subprocess(
                    plan, args, backend, sink=lambda one, p=position: save(one, p)
                )
    except KeyboardInterrupt:
        print(f"bench: interrupted; what was measured is in {args.json}", file=sys.stderr)
        return 130
    print(report(runs))
    if write_errors:
        print(f"bench: the results could not be written to {args.json}", file=sys.stderr)
        return 1
    print(f"results written to {args.json} and {markdown_path(args.json)}")
    failed = [one for one in runs if "error" in one or one.get("errors")] + [
        m for one in runs for m in one.get("memory", ()) if "error" in m or not m["finite"]
    ]
    return 1 if failed else 0


def report(runs):
    """The text of every run's tables (the same as bench.md's)."""
    lines = []
    for one in runs:
        if "error" in one:
            lines.append(f"{one['backend']}: FAILED: {one['error']}")
        for error in one.get("errors", ()):
            lines.append(f"{one['backend']}: FAILED: {error}")
        if "device" not in one:
            continue
        lines.append(
            f"backend {one['backend']} on {one['device']}; {format_versions(one['versions'])}"
        )
        if one["comparisons"]:
            lines.append(format_table(one["comparisons"], one["peak_gflops"]))
        if one["memory"]:
            lines.append(format_memory(one["memory"]))
    if len(runs) > 1:
        lines.append(format_backends(runs))
    return "\n".join(lines)


def markdown_path(json_path):
    return os.path.splitext(json_path)[0] + ".md"


def write_markdown(path, runs):
    with open(path + ".tmp", "w") as file:
        file.write(f"# bench\n\n```\n{report(runs)}\n```\n")
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    import argparse

    payload = json.loads(sys.argv[1])  # one whole run under this process's KERAS_BACKEND
    arguments = argparse.Namespace(**payload["args"])
    try:
        measure(parse(arguments), arguments, sink=lambda one: write_json(payload["output"], one))
    except KeyboardInterrupt:
        sys.exit(130)

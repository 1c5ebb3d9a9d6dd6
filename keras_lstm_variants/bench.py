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

Memory: each measurement runs in a fresh subprocess (``python -m keras_lstm_variants.bench
SPEC``). It builds the model, resets the kernel's peak-RSS mark (writing ``5`` to
``/proc/self/clear_refs``), makes one call and reports the peak RSS (``getrusage``) and the
RSS just before the call (``/proc/self/statm``). Their difference is what the call needed:
tracing (constant in the sequence length) plus the tensors of the step. A second call would
understate it: the allocator keeps the first call's freed memory.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from .cli import UsageError

#: The stock Keras layer a variant family is compared with (``LSTM`` where not listed).
STOCK = {"gru": "GRU", "mingru": "GRU"}


def stock_of(spec):
    """``keras.LSTM`` or ``keras.GRU``: the stock layer that ``spec``'s family is compared with."""
    from .specs import parse_spec

    return "keras." + STOCK.get(parse_spec(spec)[0], "LSTM")


@dataclass(frozen=True)
class Shape:
    """One benchmark problem: ``batch`` sequences of ``time`` steps, ``features`` -> ``units``."""

    batch: int
    time: int
    features: int
    units: int

    def __str__(self):
        return f"{self.batch}x{self.time}x{self.features}x{self.units}"


DEFAULT_SHAPE = Shape(batch=64, time=100, features=64, units=256)
LONG_SHAPE = Shape(batch=16, time=1000, features=32, units=128)


def forward_flops(shape, blocks):
    """GEMM flops of one forward pass: ``2 B T (F + U) G U`` for ``G`` = ``blocks``."""
    return 2 * shape.batch * shape.time * (shape.features + shape.units) * blocks * shape.units


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


def current_backend():
    import keras

    return keras.backend.backend()


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
    variants = parse_variants(args.variants)
    check_output_path("--json", args.json)
    custom = {name: getattr(args, name) for name in ("batch", "time", "features", "units")}
    if any(value is not None for value in custom.values()):
        shapes = [Shape(**{k: v or getattr(DEFAULT_SHAPE, k) for k, v in custom.items()})]
    else:
        shapes = [DEFAULT_SHAPE, LONG_SHAPE]
    sections = {name.strip() for name in args.sections.split(",") if name.strip()}
    if not sections or not sections <= {"speed", "memory"}:
        raise UsageError(f"--sections takes speed and/or memory; received {args.sections!r}")
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


def parse_variants(text):
    """The spec strings of ``--variants``, each built once (tiny) so that a bad name or option
    fails here, before any measurement; raise naming the argument."""
    from .specs import build_layer

    specs = [spec.strip() for spec in text.split(",") if spec.strip()]
    if not specs:
        raise UsageError(f"--variants takes comma-separated variant specs; received {text!r}")
    for spec in specs:
        try:
            build_layer(spec, 2)
        except (ValueError, TypeError) as error:
            raise UsageError(f"--variants: {spec!r}: {error}") from None
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


def progress(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the GEMM peak
def gemm_peak(n, repeats=5):
    """Float32 GEMM GFLOP/s for ``n x n @ n x n``: best of ``repeats``, NumPy and the current
    Keras backend (``keras.ops.matmul`` on its default device; the sum of the result is read
    back, which waits for the device without timing a copy of the product to the host)."""
    from keras import ops

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ta, tb = ops.convert_to_tensor(a), ops.convert_to_tensor(b)
    runs = {
        "numpy": lambda: a @ b,
        current_backend(): lambda: ops.convert_to_numpy(ops.sum(ops.matmul(ta, tb))),
    }
    best = {}
    for name, run in runs.items():
        run()
        best[name] = min(timed(run) for _ in range(repeats))
    return {name: 2 * n**3 / seconds / 1e9 for name, seconds in best.items()}


def cores():
    """CPU cores this process may run on (its affinity), which the backends' pools use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


def device_description():
    """What the current backend computes on: its first device, and the CPU model."""
    backend = current_backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        name = f"{device.platform}: {getattr(device, 'device_kind', device)}"
    elif backend == "torch":
        import torch

        cuda = torch.cuda.is_available()
        name = f"cuda: {torch.cuda.get_device_name(0)}" if cuda else "cpu"
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        name = f"gpu: {gpus[0].name}" if gpus else "cpu"
    return f"{name} ({cpu_model()}, {cores()} cores)"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def versions():
    """Versions of Python, Keras and every backend library imported in this process."""
    import keras

    found = {"python": sys.version.split()[0], "keras": keras.__version__}
    for name in ("tensorflow", "jax", "torch"):
        if name in sys.modules:
            found[name] = sys.modules[name].__version__
    return found


def timed(function, *args):
    """Wall-clock seconds of one call ``function(*args)``."""
    return timed_cpu(function, *args)[0]


def timed_cpu(function, *args):
    """``(wall, cpu)`` seconds of one call; CPU time is summed over the process's threads."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


# ------------------------------------------------------------------------------- models
def build_model(kind, shape, jit_compile, seed=0):
    """A compiled one-layer model: ``kind`` is a variant spec or ``keras.LSTM``/``keras.GRU``."""
    import keras

    from .specs import build_layer

    keras.utils.set_random_seed(seed)
    if kind.startswith("keras."):
        layer = getattr(keras.layers, kind.split(".")[1])(shape.units)
    else:
        layer = build_layer(kind, shape.units)
    model = keras.Sequential(
        [keras.Input((shape.time, shape.features), batch_size=shape.batch), layer]
    )
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    return model


#: The torch anchor of each stock Keras layer.
ANCHORS = {"keras.LSTM": "torch.nn.LSTM", "keras.GRU": "torch.nn.GRU"}


class TorchAnchor:
    """``torch.nn.LSTM``/``GRU`` (cuDNN on a GPU, oneDNN on a CPU) timed like the Keras models:
    ``train_on_batch`` is forward, MSE of the last output, backward and an SGD step;
    ``predict_on_batch`` is the forward pass without gradients; both take and return NumPy."""

    def __init__(self, kind, shape, seed=0):
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        module = getattr(torch.nn, kind.split(".")[-1])
        self.rnn = module(shape.features, shape.units, batch_first=True).to(self.device)
        self.optimizer = torch.optim.SGD(self.rnn.parameters(), lr=0.01)
        self.output_shape = (None, shape.units)
        self.parameters = sum(p.numel() for p in self.rnn.parameters() if p.dim() == 2)

    def train_on_batch(self, x, y):
        torch = self.torch
        x, y = torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        outputs, _ = self.rnn(x)
        loss = torch.nn.functional.mse_loss(outputs[:, -1], y)
        loss.backward()
        self.optimizer.step()
        return loss.item()  # reads the loss back: waits for the device

    def predict_on_batch(self, x):
        with self.torch.no_grad():
            outputs, _ = self.rnn(self.torch.from_numpy(x).to(self.device))
            return outputs[:, -1].cpu().numpy()


def step_flops(model, batch):
    """GEMM flops of one forward step of ``model``'s recurrent layer at ``batch``: the cell's
    ``flops_per_step(batch)`` where it defines one, else ``2 B`` x the size of every weight
    matrix of the cell (each is one product per step)."""
    if isinstance(model, TorchAnchor):
        return 2 * batch * model.parameters
    cell = model.layers[-1].cell
    if hasattr(cell, "flops_per_step"):
        return int(cell.flops_per_step(batch))
    sizes = [int(np.prod(w.shape)) for w in matrix_weights(cell)]
    return 2 * batch * sum(sizes)


def matrix_weights(cell):
    """The cell's weight matrices (a GRU's ``(2, 3U)`` bias is no matrix product)."""
    return [w for w in cell.trainable_weights if len(w.shape) == 2 and "bias" not in w.name]


def target(model, shape):
    """Random regression targets shaped like ``model``'s output (``units`` or ``proj_units``)."""
    rng = np.random.default_rng(1)
    return rng.standard_normal((shape.batch, *model.output_shape[1:]), dtype=np.float32)


def first_calls(kind, jit, model, shape, x):
    """``(entry, model, y)`` for the timing loop: the record of one model (Keras or the torch
    anchor), with its first training and inference calls (tracing, compilation) timed."""
    y = target(model, shape)
    entry = {
        "model": kind,
        "jit_compile": jit,
        "shape": asdict(shape),
        "forward_flops": shape.time * step_flops(model, shape.batch),
        "train": [],
        "predict": [],
    }
    entry["first_train_s"] = timed(model.train_on_batch, x, y)
    entry["first_predict_s"] = timed(model.predict_on_batch, x)
    return entry, model, y


def bench_shape(shape, variants, jit_modes, repeats, peak, anchors=()):
    """Time every (model, jit) pair at ``shape``, and the torch anchors, interleaved; return
    one record per pair."""
    kinds = with_stock(variants)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((shape.batch, shape.time, shape.features), dtype=np.float32)
    entries = []
    for kind in kinds:
        for jit in jit_modes:
            progress(f"{shape}: {kind} jit_compile={jit}: build, first calls")
            entries.append(first_calls(kind, jit, build_model(kind, shape, jit), shape, x))
    if "torch" in anchors:
        for kind in sorted({ANCHORS[stock_of(spec)] for spec in variants}):
            progress(f"{shape}: {kind}: build, first calls")
            entries.append(first_calls(kind, None, TorchAnchor(kind, shape), shape, x))
    for repeat in range(repeats):
        progress(f"{shape}: repeat {repeat + 1}/{repeats} over {len(entries)} models")
        for entry, model, y in entries:
            entry["train"].append(timed_cpu(model.train_on_batch, x, y))
            entry["predict"].append(timed_cpu(model.predict_on_batch, x))
    records = []
    for entry, _, _ in entries:
        flops = entry["forward_flops"]
        samples = {mode: np.array(entry.pop(mode)) for mode in ("train", "predict")}
        (train, train_cpu), (predict, predict_cpu) = (
            samples[mode].min(axis=0) for mode in ("train", "predict")
        )
        records.append(
            {
                **entry,
                "train_ms": 1e3 * train,
                "predict_ms": 1e3 * predict,
                "train_cpu_ms": 1e3 * train_cpu,
                "predict_cpu_ms": 1e3 * predict_cpu,
                "train_gflops": 3 * flops / train / 1e9,
                "predict_gflops": flops / predict / 1e9,
                "train_peak_fraction": 3 * flops / train / 1e9 / peak,
                "first_call_overhead_s": entry["first_train_s"] - train,
                "compile_s": entry["first_train_s"] - train if entry["jit_compile"] else None,
                "first_predict_overhead_s": entry["first_predict_s"] - predict,
                # every repeat near the minimum and far below the first call: no recompilation
                "train_median_ms": 1e3 * float(np.median(samples["train"][:, 0])),
                "train_max_ms": 1e3 * float(samples["train"][:, 0].max()),
                "predict_max_ms": 1e3 * float(samples["predict"][:, 0].max()),
            }
        )
    return records


def compare(records):
    """One row per (shape, variant, jit): our times, the stock times and their ratios."""
    by_key = {(str(Shape(**r["shape"])), r["model"], r["jit_compile"]): r for r in records}
    rows = []
    for (shape, model, jit), ours in by_key.items():
        if model.startswith(("keras.", "torch.")):
            continue
        stock = by_key[(shape, stock_of(model), jit)]
        anchor = by_key.get((shape, ANCHORS[stock_of(model)], None))
        no_jit = by_key.get((shape, model, False))
        rows.append(
            {
                "shape": shape,
                "variant": model,
                "jit_compile": jit,
                "stock": stock["model"],
                "train_ms": ours["train_ms"],
                "stock_train_ms": stock["train_ms"],
                "train_ratio": ours["train_ms"] / stock["train_ms"],
                "predict_ms": ours["predict_ms"],
                "stock_predict_ms": stock["predict_ms"],
                "predict_ratio": ours["predict_ms"] / stock["predict_ms"],
                "anchor": anchor and anchor["model"],
                "anchor_train_ms": anchor and anchor["train_ms"],
                "anchor_train_ratio": anchor and ours["train_ms"] / anchor["train_ms"],
                "anchor_predict_ms": anchor and anchor["predict_ms"],
                "anchor_predict_ratio": anchor and ours["predict_ms"] / anchor["predict_ms"],
                "jit_vs_no_jit_train": ours["train_ms"] / no_jit["train_ms"]
                if jit and no_jit
                else None,
                "train_gflops": ours["train_gflops"],
                "train_peak_fraction": ours["train_peak_fraction"],
                "compile_s": ours["compile_s"],
            }
        )
    return rows


# ------------------------------------------------------------------------------- memory
def proc_status_kb(field):
    """A ``kB`` field of ``/proc/self/status`` (Linux), e.g. ``VmRSS`` or ``VmHWM``, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def measure_memory(spec):
    """Run once in this (fresh) process: the host memory one call needs, per ``spec`` (a dict).

    The model is built and its input made first; then the kernel's high-water mark is reset
    (``5`` into ``/proc/self/clear_refs``) and the call made. ``VmHWM`` is then the peak RSS
    *during the call*; ``VmHWM - RSS before`` is what the call needed. (``getrusage``'s
    ``ru_maxrss`` is not reset that way once a thread has exited, so it reports the process's
    lifetime peak instead.)"""
    shape = Shape(**spec["shape"])
    model = build_model(spec["model"], shape, jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((shape.batch, shape.time, shape.features), dtype=np.float32)
    y = target(model, shape)
    lifetime_peak = proc_status_kb("VmHWM")
    peak_reset = reset_peak_rss()
    before = proc_status_kb("VmRSS")
    start = time.perf_counter()
    if spec["mode"] == "train":
        finite = bool(np.isfinite(model.train_on_batch(x, y)))
    else:
        finite = bool(np.isfinite(model.predict_on_batch(x)).all())
    seconds = time.perf_counter() - start
    peak = proc_status_kb("VmHWM")
    return {
        **spec,
        "rss_before_mb": before / 2**20,
        "peak_rss_mb": peak / 2**20,
        "call_mb": (peak - before) / 2**20,
        "peak_before_reset_mb": lifetime_peak / 2**20,
        "peak_reset": peak_reset,
        "seconds": seconds,
        "finite": finite,
    }


def reset_peak_rss():
    """Reset this process's peak-RSS mark (Linux >= 4.0); return whether that worked."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def memory_in_subprocess(spec):
    """:func:`measure_memory` in a fresh interpreter, so each peak is its own."""
    done = subprocess.run(
        [sys.executable, "-m", __name__, "memory", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return {
            **spec,
            "error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"],
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def with_stock(variants):
    """``variants`` followed by the stock layers they are compared with."""
    return list(variants) + sorted({stock_of(spec) for spec in variants})


def bench_memory(variants, lengths, inference_steps, inference_units):
    """Peak RSS of the long case's training step (ours and stock) at each of ``lengths``, and
    of our layers' inference over ``inference_steps`` steps with ``inference_units`` units."""
    specs = [
        {"model": kind, "mode": "train", "shape": asdict(replace(LONG_SHAPE, time=steps))}
        for kind in with_stock(variants)
        for steps in lengths
    ]
    if inference_steps:
        long = replace(LONG_SHAPE, time=inference_steps, units=inference_units)
        specs += [{"model": name, "mode": "predict", "shape": asdict(long)} for name in variants]
    results = []
    for number, spec in enumerate(specs, 1):
        progress(
            f"memory {number}/{len(specs)}: {spec['model']} {spec['mode']} {Shape(**spec['shape'])}"
        )
        results.append(memory_in_subprocess(spec))
    return results


# -------------------------------------------------------------------------------- output
def render(table, widths, left):
    """Lines of a text table: the first ``left`` columns left-aligned, the rest right-aligned;
    a column is widened to its longest value (long variant specs) in the full rows."""
    widths = [
        max([width] + [len(str(row[column])) for row in table if len(row) == len(widths)])
        for column, width in enumerate(widths)
    ]
    return [
        " ".join(
            f"{value:<{width}}" if column < left else f"{value:>{width}}"
            for column, (value, width) in enumerate(zip(values, widths, strict=False))
        ).rstrip()
        for values in table
    ]


def number(value, spec):
    return "" if value is None else format(value, spec)


def format_table(rows, peak):
    """One line per (shape, variant, jit_compile): ours, stock, torch, the ratios; throughput."""
    anchored = any(row["anchor"] for row in rows)
    torch_head = ("torch", "ratio") if anchored else ()
    table = [
        (
            *("shape BxTxFxU", "variant", "jit", "train ms", "stock", "ratio", *torch_head),
            *("infer ms", "stock", "ratio", *torch_head),
            *("GFLOP/s", "%peak", "jit/no", "compile s"),
        )
    ]
    for row in rows:

        def times(mode, row=row):
            ms, ratio = (f"anchor_{mode}_ms", f"anchor_{mode}_ratio")
            torch = (number(row[ms], ".1f"), number(row[ratio], ".2f")) if anchored else ()
            return (
                number(row[f"{mode}_ms"], ".1f"),
                number(row[f"stock_{mode}_ms"], ".1f"),
                number(row[f"{mode}_ratio"], ".2f"),
                *torch,
            )

        table.append(
            (
                *(row["shape"], row["variant"], "yes" if row["jit_compile"] else "no"),
                *times("train"),
                *times("predict"),
                number(row["train_gflops"], ".1f"),
                number(100 * row["train_peak_fraction"], ".1f"),
                number(row["jit_vs_no_jit_train"], ".2f"),
                number(row["compile_s"], ".1f"),
            )
        )
    title = f"GEMM peak {peak:.0f} GFLOP/s; minimum over the repeats; ratio = ours / stock"
    if anchored:
        title += " and ours / torch.nn (same threads)"
    head = (8, 8, 5, *((7, 5) if anchored else ()))
    widths = (17, 9, 3, *head, *head, 7, 5, 6, 9)
    return "\n".join([title, *render(table, widths, left=3)])


def format_memory(results):
    """One line per memory measurement: peak RSS of the process and of the call."""
    table = [("memory", "mode", "shape BxTxFxU", "peak RSS MB", "call MB", "s")]
    for r in results:
        head = (r["model"], r["mode"], str(Shape(**r["shape"])))
        if "error" in r:
            table.append((*head, "FAILED: " + " ".join(r["error"])))
        else:
            sizes = (number(r["peak_rss_mb"], ".0f"), number(r["call_mb"], ".0f"))
            table.append((*head, *sizes, number(r["seconds"], ".1f")))
    return "\n".join(render(table, (10, 7, 17, 11, 8, 6), left=3))


def measure(plan, args):
    """Everything ``plan`` asks for, on the current backend, in this process: one run."""
    backend = current_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # one retracing warning per model otherwise
    anchors = plan["anchors"]
    if "torch" in anchors:
        import torch

        torch.set_num_threads(args.torch_threads or cores())
    started, load_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), os.getloadavg()
    gemm, peak, records, memory = {}, None, [], []
    jit_modes = JIT_MODES[backend]
    if args.no_jit:
        jit_modes = tuple(mode for mode in jit_modes if not mode) or jit_modes
    if "speed" in plan["sections"]:
        progress(f"{backend}: GEMM peak: {args.gemm_size}^3 float32")
        gemm = gemm_peak(args.gemm_size)
        peak = max(gemm.values())
        for shape in plan["shapes"]:
            records += bench_shape(shape, plan["variants"], jit_modes, args.repeats, peak, anchors)
    if "memory" in plan["sections"]:
        memory = bench_memory(
            plan["variants"], plan["lengths"], args.inference_steps, args.inference_units
        )
    return {
        "backend": backend,
        "device": device_description(),
        "versions": versions(),
        "cores": cores(),
        "torch_threads": (args.torch_threads or cores()) if anchors else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "started": started,
        "load_average_before_after": [load_before, os.getloadavg()],
        "repeats": args.repeats,
        "gemm_gflops": gemm,
        "gemm_size": args.gemm_size,
        "peak_gflops": peak,
        "records": records,
        "comparisons": [{"backend": backend, **row} for row in compare(records)],
        "memory": [{"backend": backend, **m} for m in memory],
    }


def measure_in_subprocess(plan, args, backend):
    """:func:`measure` under ``KERAS_BACKEND=backend`` in a fresh interpreter."""
    progress(f"{backend}: starting its own process")
    with tempfile.TemporaryDirectory() as directory:
        output = os.path.join(directory, "run.json")
        request = {"args": vars(args), "output": output}
        env = {**os.environ, "KERAS_BACKEND": backend}
        command = [sys.executable, "-m", __name__, "backend", json.dumps(request)]
        done = subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL)
        if done.returncode != 0 or not os.path.exists(output):
            return {"backend": backend, "error": f"the {backend} run exited {done.returncode}"}
        with open(output) as file:
            return json.load(file)


def run(args):
    # OMP_WAIT_POLICY is left as the user set it (recorded in the JSON): PASSIVE rescues torch's
    # 2-thread pool on a loaded machine but made torch.nn.LSTM 1.3-6x slower on the idle one
    # (docs/speed.md, "PyTorch's threads").
    plan = parse(args)
    if plan["backends"] == [current_backend()]:
        runs = [measure(plan, args)]
    else:
        runs = [measure_in_subprocess(plan, args, backend) for backend in plan["backends"]]
    for one in runs:
        if "error" in one:
            print(f"{one['backend']}: FAILED: {one['error']}")
            continue
        print(f"backend {one['backend']} on {one['device']}; {format_versions(one['versions'])}")
        if one["comparisons"]:
            print(format_table(one["comparisons"], one["peak_gflops"]))
        if one["memory"]:
            print(format_memory(one["memory"]))
    if len(runs) > 1:
        print(format_backends(runs))
    sys.stdout.flush()
    result = {"runs": runs}
    with open(args.json, "w") as file:
        json.dump(result, file, indent=1)
    print(f"results written to {args.json}")
    failed = [one for one in runs if "error" in one] + [
        m for one in runs for m in one.get("memory", ()) if "error" in m or not m["finite"]
    ]
    return 1 if failed else 0


def format_versions(found):
    return ", ".join(f"{name} {version}" for name, version in found.items())


def format_backends(runs):
    """One line per (shape, variant): train / infer ms on every backend, side by side."""
    columns = [one["backend"] for one in runs if "error" not in one]
    times = {}
    for one in runs:
        for r in one.get("records", ()):
            key = (str(Shape(**r["shape"])), r["model"], r["jit_compile"])
            times.setdefault(key, {})[one["backend"]] = r
    table = [("shape BxTxFxU", "model", "jit", *(f"{b} train/infer ms" for b in columns))]
    for (shape, model, jit), by_backend in times.items():
        cells = []
        for backend in columns:
            r = by_backend.get(backend)
            cells.append(f"{r['train_ms']:.1f} / {r['predict_ms']:.1f}" if r else "")
        jit_text = "" if jit is None else ("yes" if jit else "no")
        table.append((shape, model, jit_text, *cells))
    widths = (17, 9, 3) + (len(table[0][3]),) * len(columns)
    return "\n".join(["side by side (minimum over the repeats)", *render(table, widths, left=3)])


if __name__ == "__main__":
    mode, payload = sys.argv[1], json.loads(sys.argv[2])
    if mode == "memory":
        print(json.dumps(measure_memory(payload)))
    else:  # "backend": one whole run under this process's KERAS_BACKEND
        import argparse

        arguments = argparse.Namespace(**payload["args"])
        one = measure(parse(arguments), arguments)
        with open(payload["output"], "w") as file:
            json.dump(one, file)

"""``bench``'s measuring: shapes, the GEMM peak, the device, and the interleaved timing loop."""

import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from .bench_anchors import ANCHORS, TorchAnchor


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


def stock_of(spec):
    """``keras.LSTM`` or ``keras.GRU``: the stock layer that ``spec``'s variant is compared with
    (its registry record's ``stock``)."""
    from .. import registry
    from .specs import parse_spec

    return "keras." + registry.get(parse_spec(spec)[0]).stock


def with_stock(variants):
    """``variants`` followed by the stock layers they are compared with."""
    return list(variants) + sorted({stock_of(spec) for spec in variants})


def forward_flops(shape, blocks):
    """GEMM flops of one forward pass: ``2 B T (F + U) G U`` for ``G`` = ``blocks``."""
    return 2 * shape.batch * shape.time * (shape.features + shape.units) * blocks * shape.units


def current_backend():
    import keras

    return keras.backend.backend()


def progress(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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


def bench_shape(shape, kinds, jit_modes, repeats, peak, make=None, on_repeat=None):
    """Time every (model, jit) pair of ``kinds`` at ``shape``, interleaved; return one record
    per pair. ``make(kind, shape, jit)`` builds a model (default: :func:`build_model`);
    ``on_repeat(records)`` gets the records so far after each repeat (written at once, so an
    interruption keeps them)."""
    make = make or build_model
    rng = np.random.default_rng(0)
    x = rng.standard_normal((shape.batch, shape.time, shape.features), dtype=np.float32)
    entries = []
    for kind in kinds:
        for jit in jit_modes:
            progress(f"{shape}: {kind} jit_compile={jit}: build, first calls")
            entries.append(first_calls(kind, jit, make(kind, shape, jit), shape, x))
    records = []
    for repeat in range(repeats):
        progress(f"{shape}: repeat {repeat + 1}/{repeats} over {len(entries)} models")
        for entry, model, y in entries:
            entry["train"].append(timed_cpu(model.train_on_batch, x, y))
            entry["predict"].append(timed_cpu(model.predict_on_batch, x))
        records = [summarize_entry(entry, peak) for entry, _, _ in entries]
        if on_repeat:
            on_repeat(records)
    return records


def summarize_entry(entry, peak):
    """The record of one timed model: the minimum over its repeats so far, and throughput."""
    flops = entry["forward_flops"]
    samples = {mode: np.array(entry[mode]) for mode in ("train", "predict")}
    (train, train_cpu), (predict, predict_cpu) = (
        samples[mode].min(axis=0) for mode in ("train", "predict")
    )
    return {
        **{key: value for key, value in entry.items() if key not in ("train", "predict")},
        "repeats_done": len(samples["train"]),
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

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

import json
import os
import resource
import subprocess
import sys
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
    parser.add_argument("--no-jit", action="store_true", help="skip the jit_compile=True models")
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


def parse(args):
    """Validate ``args``; return (shapes, variants, memory lengths, sections)."""
    for name in ("batch", "time", "features", "units", "repeats", "gemm_size", "inference_units"):
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
    return shapes, variants, positive_ints("memory-steps", args.memory_steps), sections


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
    """Float32 GEMM GFLOP/s for ``n x n @ n x n``: best of ``repeats``, NumPy and TensorFlow."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ta, tb = tf.constant(a), tf.constant(b)
    runs = {"numpy": lambda: a @ b, "tensorflow": lambda: (ta @ tb).numpy()}
    best = {}
    for name, run in runs.items():
        run()
        best[name] = min(timed(run) for _ in range(repeats))
    return {name: 2 * n**3 / seconds / 1e9 for name, seconds in best.items()}


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


def step_flops(model, batch):
    """GEMM flops of one forward step of ``model``'s recurrent layer at ``batch``: the cell's
    ``flops_per_step(batch)`` where it defines one, else ``2 B`` x the size of every matrix
    weight of the cell (each is one product per step)."""
    cell = model.layers[-1].cell
    if hasattr(cell, "flops_per_step"):
        return int(cell.flops_per_step(batch))
    sizes = [int(np.prod(w.shape)) for w in cell.trainable_weights if len(w.shape) == 2]
    return 2 * batch * sum(sizes)


def target(model, shape):
    """Random regression targets shaped like ``model``'s output (``units`` or ``proj_units``)."""
    rng = np.random.default_rng(1)
    return rng.standard_normal((shape.batch, *model.output_shape[1:]), dtype=np.float32)


def bench_shape(shape, variants, jit_modes, repeats, peak):
    """Time every (model, jit) pair at ``shape``, interleaved; return one record per pair."""
    kinds = with_stock(variants)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((shape.batch, shape.time, shape.features), dtype=np.float32)
    entries = []
    for kind in kinds:
        for jit in jit_modes:
            progress(f"{shape}: {kind} jit_compile={jit}: build, first calls")
            model = build_model(kind, shape, jit)
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
            entries.append((entry, model, y))
    for repeat in range(repeats):
        progress(f"{shape}: repeat {repeat + 1}/{repeats} over {len(entries)} models")
        for entry, model, y in entries:
            entry["train"].append(timed_cpu(model.train_on_batch, x, y))
            entry["predict"].append(timed_cpu(model.predict_on_batch, x))
    records = []
    for entry, _, _ in entries:
        flops = entry["forward_flops"]
        (train, train_cpu), (predict, predict_cpu) = (
            np.min(entry.pop(mode), axis=0) for mode in ("train", "predict")
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
            }
        )
    return records


def compare(records):
    """One row per (shape, variant, jit): our times, the stock times and their ratios."""
    by_key = {(str(Shape(**r["shape"])), r["model"], r["jit_compile"]): r for r in records}
    rows = []
    for (shape, model, jit), ours in by_key.items():
        if model.startswith("keras."):
            continue
        stock = by_key[(shape, stock_of(model), jit)]
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
def current_rss():
    """Resident set size of this process now, in bytes (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_memory(spec):
    """Run once in this (fresh) process: peak RSS of one call, per ``spec`` (a dict)."""
    shape = Shape(**spec["shape"])
    model = build_model(spec["model"], shape, jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((shape.batch, shape.time, shape.features), dtype=np.float32)
    y = target(model, shape)
    peak_reset = reset_peak_rss()
    before = current_rss()
    start = time.perf_counter()
    if spec["mode"] == "train":
        finite = bool(np.isfinite(model.train_on_batch(x, y)))
    else:
        finite = bool(np.isfinite(model.predict_on_batch(x)).all())
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is KiB on Linux
    return {
        **spec,
        "rss_before_mb": before / 2**20,
        "peak_rss_mb": peak / 2**20,
        "call_mb": (peak - before) / 2**20,
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
    """:func:`measure_memory` in a fresh interpreter, so each peak RSS is its own."""
    done = subprocess.run(
        [sys.executable, "-m", __name__, json.dumps(spec)],
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
    """One line per (shape, variant, jit_compile): ours, stock, their ratio; throughput."""
    table = [
        (
            *("shape BxTxFxU", "variant", "jit", "train ms", "stock", "ratio"),
            *("infer ms", "stock", "ratio", "GFLOP/s", "%peak", "jit/no", "compile s"),
        )
    ]
    for row in rows:
        table.append(
            (
                *(row["shape"], row["variant"], "yes" if row["jit_compile"] else "no"),
                *(number(row[key], ".1f") for key in ("train_ms", "stock_train_ms")),
                number(row["train_ratio"], ".2f"),
                *(number(row[key], ".1f") for key in ("predict_ms", "stock_predict_ms")),
                number(row["predict_ratio"], ".2f"),
                number(row["train_gflops"], ".1f"),
                number(100 * row["train_peak_fraction"], ".1f"),
                number(row["jit_vs_no_jit_train"], ".2f"),
                number(row["compile_s"], ".1f"),
            )
        )
    title = f"GEMM peak {peak:.0f} GFLOP/s; minimum over the repeats; ratio = ours / stock"
    widths = (17, 9, 3, 8, 8, 5, 8, 8, 5, 7, 5, 6, 9)
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


def run(args):
    shapes, variants, lengths, sections = parse(args)
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one retracing warning per model otherwise
    started, load_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), os.getloadavg()
    gemm, peak, records, memory = {}, None, [], []
    if "speed" in sections:
        progress(f"GEMM peak: {args.gemm_size}^3 float32")
        gemm = gemm_peak(args.gemm_size)
        peak = max(gemm.values())
        jit_modes = (False,) if args.no_jit else (False, True)
        for shape in shapes:
            records += bench_shape(shape, variants, jit_modes, args.repeats, peak)
    rows = compare(records)
    if "memory" in sections:
        memory = bench_memory(variants, lengths, args.inference_steps, args.inference_units)
    result = {
        "versions": {
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "python": sys.version.split()[0],
        },
        "cpu_count": os.cpu_count(),
        "started": started,
        "load_average_before_after": [load_before, os.getloadavg()],
        "repeats": args.repeats,
        "gemm_gflops": gemm,
        "gemm_size": args.gemm_size,
        "peak_gflops": peak,
        "records": records,
        "comparisons": rows,
        "memory": memory,
    }
    if rows:
        print(format_table(rows, peak))
    if memory:
        print(format_memory(memory))
    sys.stdout.flush()
    with open(args.json, "w") as file:
        json.dump(result, file, indent=1)
    print(f"results written to {args.json}")
    failed = [r for r in memory if "error" in r or not r["finite"]]
    return 1 if failed else 0


if __name__ == "__main__":
    print(json.dumps(measure_memory(json.loads(sys.argv[1]))))

"""``bench``'s memory: the peak RSS of one call, each measured in a fresh interpreter.

Run as ``python -m keras_lstm_variants.commands.bench_memory SPEC`` (a JSON dict) by
:func:`memory_in_subprocess`.
"""

import json
import subprocess
import sys
import time
from dataclasses import asdict, replace

import numpy as np

from .bench_timing import LONG_SHAPE, Shape, build_model, progress, target, with_stock


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


def bench_memory(variants, lengths, inference_steps, inference_units, on_result=None):
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
        if on_result:
            on_result(results)
    return results


if __name__ == "__main__":
    print(json.dumps(measure_memory(json.loads(sys.argv[1]))))

"""minGRU / minLSTM against our LSTM / GRU at long sequences, side by side (issue 11, "Speed").

For each sequence length (default 250, 1000, 4000) at batch 16, 32 features, 128 units it
builds ``Input -> layer -> Dense(1)`` for each variant and times ``train_on_batch`` and
``predict_on_batch``, interleaved (every repeat visits every model once, so a noisy
neighbour slows them all alike), and prints the minimum over the repeats, the ratio to our
LSTM and the time per step. ``--precision`` also prints how far the paper's log-space closed
form (cumsum + logcumsumexp, in float32) and this package's scan (float32) are from the exact
recurrence (float64), at each length.

    python examples/minimal_speed.py [--lengths 250,1000,4000] [--repeats 5] [--jit] [--precision]
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_lstm_variants as klv

BATCH, FEATURES, UNITS = 16, 32, 128
VARIANTS = ("lstm", "gru", "mingru", "minlstm")


def build(variant, time_steps, jit_compile):
    model = keras.Sequential(
        [
            keras.Input((time_steps, FEATURES)),
            klv.VARIANTS[variant][1](UNITS),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse", jit_compile=jit_compile)
    return model


def timed(function, *args):
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def measure(time_steps, repeats, jit_compile):
    """``{variant: (train seconds, predict seconds, first call seconds)}`` at ``time_steps``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, time_steps, FEATURES)).astype("float32")
    y = rng.normal(size=(BATCH, 1)).astype("float32")
    models, first = {}, {}
    for variant in VARIANTS:
        models[variant] = build(variant, time_steps, jit_compile)
        first[variant] = timed(models[variant].train_on_batch, x, y)
        first[variant] += timed(models[variant].predict_on_batch, x)
    train = {variant: [] for variant in VARIANTS}
    predict = {variant: [] for variant in VARIANTS}
    for _ in range(repeats):
        for variant, model in models.items():
            train[variant].append(timed(model.train_on_batch, x, y))
            predict[variant].append(timed(model.predict_on_batch, x))
    return {v: (min(train[v]), min(predict[v]), first[v]) for v in VARIANTS}


def precision(time_steps, seed=0):
    """Max relative error vs float64 of (paper's closed form, this package's scan) in float32,
    for minGRU coefficients from random N(0, 1) pre-activations and h_0 = |N(0, 1)|."""
    from keras_lstm_variants.cells.minimal import g, scan_recurrence

    rng = np.random.default_rng(seed)
    k = rng.normal(size=(BATCH, time_steps, UNITS))
    k_h = rng.normal(size=(BATCH, time_steps, UNITS))
    h_0 = np.abs(rng.normal(size=(BATCH, UNITS)))
    # Exact recurrence in float64.
    z = 1 / (1 + np.exp(-k))
    h_tilde = np.where(k_h >= 0, k_h + 0.5, 1 / (1 + np.exp(-k_h)))
    h, exact = h_0, []
    for t in range(time_steps):
        h = (1 - z[:, t]) * h + z[:, t] * h_tilde[:, t]
        exact.append(h)
    exact = np.stack(exact, axis=1)
    # The paper's parallel_scan_log, in float32.
    f32 = np.float32
    log_coeffs = (-np.logaddexp(0, k)).astype(f32)
    log_z = (-np.logaddexp(0, -k)).astype(f32)
    log_h_tilde = np.log(h_tilde).astype(f32)
    log_values = np.concatenate([np.log(h_0).astype(f32)[:, None], log_z + log_h_tilde], axis=1)
    a_star = np.pad(np.cumsum(log_coeffs, axis=1, dtype=f32), ((0, 0), (1, 0), (0, 0)))
    log_h = a_star + np.logaddexp.accumulate(log_values - a_star, axis=1, dtype=f32)
    paper = np.exp(log_h)[:, 1:]
    # Ours, in float32.
    a = keras.ops.convert_to_numpy(keras.ops.sigmoid(-k.astype(f32)))
    b = keras.ops.convert_to_numpy(keras.ops.sigmoid(k.astype(f32)) * g(k_h.astype(f32)))
    ours = keras.ops.convert_to_numpy(scan_recurrence(a, b, h_0.astype(f32)))

    def error(h):
        return float(np.max(np.abs(h - exact) / np.abs(exact)))

    return error(paper), error(ours)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="250,1000,4000", help="comma-separated lengths")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model")
    parser.add_argument("--jit", action="store_true", help="compile with jit_compile=True")
    parser.add_argument("--precision", action="store_true", help="also print the precision")
    args = parser.parse_args(argv)
    lengths = [int(text) for text in args.lengths.split(",")]
    print(
        f"backend {keras.backend.backend()}, jit_compile={args.jit}, batch {BATCH}, "
        f"{FEATURES} features, {UNITS} units; minimum of {args.repeats} interleaved repeats"
    )
    print(
        f"{'T':>5} {'variant':8} {'train ms':>9} {'x LSTM':>7} {'us/step':>8} "
        f"{'infer ms':>9} {'x LSTM':>7} {'us/step':>8} {'first s':>8}"
    )
    for length in lengths:
        results = measure(length, args.repeats, args.jit)
        lstm_train, lstm_predict, _ = results["lstm"]
        for variant, (train, predict, first) in results.items():
            print(
                f"{length:5d} {variant:8} {1e3 * train:9.1f} {lstm_train / train:7.2f} "
                f"{1e6 * train / length:8.1f} {1e3 * predict:9.1f} {lstm_predict / predict:7.2f} "
                f"{1e6 * predict / length:8.1f} {first:8.1f}",
                flush=True,
            )
    if args.precision:
        print("max relative error vs float64 (minGRU, float32): paper's closed form, our scan")
        for length in lengths:
            paper, ours = precision(length)
            print(f"{length:5d} {paper:10.2e} {ours:10.2e}", flush=True)


if __name__ == "__main__":
    main()

"""TensorFlow's fused ``BlockLSTMV2`` against the cell's loop, by batch size (CPU inference).

For each shape batch x time x features x units, times ``predict_on_batch`` (``jit_compile=False``)
of Keras models over our ``LSTM`` and ``PeepholeLSTM`` taking the kernel (``loop="tf-block"``,
forced at every batch), the same layers stepping the cell (``kernels.forced("keras")``) and
``keras.layers.LSTM``; minimum of R (default 8) calls after the first (which traces),
interleaved.
Run with ``KERAS_BACKEND=tensorflow python3 scripts/block_probe.py``; it chose
``kernels.tf_block.BLOCK_MAX_BATCH``.
"""

import contextlib
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np

import keras_lstm_variants as klv
from keras_lstm_variants import kernels
from keras_lstm_variants.kernels import tf_block

REPEATS = int(os.environ.get("R", 8))
SHAPES = [
    (1, 100, 32, 128),
    (1, 1000, 32, 128),
    (4, 100, 64, 256),
    (16, 100, 32, 128),
    (16, 1000, 32, 128),
    (24, 100, 32, 128),
    (32, 100, 32, 128),
    (64, 100, 32, 128),
    (64, 100, 64, 256),
]
LAYERS = {"LSTM": klv.LSTM, "PeepholeLSTM": klv.PeepholeLSTM}


def model(layer, shape):
    batch, time_steps, features, _ = shape
    result = keras.Sequential([keras.Input((time_steps, features), batch_size=batch), layer])
    result.compile(jit_compile=False)
    return result


def main():
    tf_block.BLOCK_MAX_BATCH = max(shape[0] for shape in SHAPES)  # the kernel at every batch
    print("B x T x F x U: predict_on_batch ms, kernel / cell's loop (stock keras.layers.LSTM)")
    for shape in SHAPES:
        x = np.random.default_rng(0).standard_normal(shape[:3], dtype=np.float32)
        units = shape[3]
        runs = {
            f"{name} kernel": (model(cls(units, loop="tf-block"), shape), False)
            for name, cls in LAYERS.items()
        }
        runs |= {f"{name} loop": (model(cls(units), shape), True) for name, cls in LAYERS.items()}
        runs["keras.layers.LSTM"] = (model(keras.layers.LSTM(units), shape), False)
        times = {name: [] for name in runs}
        for repeat in range(REPEATS + 1):
            for name, (m, loop) in runs.items():
                with kernels.forced("keras") if loop else contextlib.nullcontext():
                    start = time.perf_counter()
                    m.predict_on_batch(x)
                    if repeat:  # the first call traces
                        times[name].append(time.perf_counter() - start)
        best = {name: 1e3 * min(values) for name, values in times.items()}
        cells = ", ".join(
            f"{name} {best[f'{name} kernel']:.1f} / {best[f'{name} loop']:.1f}" for name in LAYERS
        )
        print(f"{' x '.join(map(str, shape))}: {cells} ({best['keras.layers.LSTM']:.1f})")


if __name__ == "__main__":
    main()

"""Where an LSTM's time goes on a GPU, below Keras: bare JAX loops against cuDNN.

Times, at batch x time x features x units = 64 x T x 64 x 256 (T = 100 and 1000), float32:

* ``per-step``: ``lax.scan`` over ``x_t W + b + h U`` and the gates (the layers' loop);
* ``hoisted``: ``X W + b`` for all steps in one GEMM, then the scan over ``z_t + h U``
  (cuDNN's split), each with ``unroll`` 1 and 8;
* ``torch.nn.LSTM`` (cuDNN) on the same data;

the forward pass and the gradient of the summed outputs with respect to the weights and the
input, median of R (default 30) calls after warm-up, interleaved. Run with
``python3 scripts/gpu_probe.py`` where JAX sees a GPU; ``R`` sets the repeats.

``python3 scripts/gpu_probe.py keras`` (``KERAS_BACKEND=jax``) times our LSTM and GRU layers
in Keras models (``train_on_batch`` / ``predict_on_batch``, ``jit_compile=True``, the bench's
models) with ``kernels.jax_scan.ACCELERATOR_UNROLL`` = 1, 4, 8 and 16, interleaved, minimum of R
calls.
"""

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

B, F, U = 64, 64, 256
REPEATS = int(os.environ.get("R", 30))


def lstm_scan(z_of, xs, recurrent, unroll):
    def step(carry, x_t):
        h, c = carry
        i, f, g, o = jnp.split(z_of(x_t) + h @ recurrent, 4, -1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((xs.shape[1], U), xs.dtype)
    return jax.lax.scan(step, (zeros, zeros), xs, unroll=unroll)[1]


def per_step(unroll):
    def run(params, x):
        kernel, recurrent, bias = params
        xs = jnp.swapaxes(x, 0, 1)
        return lstm_scan(lambda x_t: x_t @ kernel + bias, xs, recurrent, unroll)

    return run


def hoisted(unroll):
    def run(params, x):
        kernel, recurrent, bias = params
        zs = jnp.swapaxes(x, 0, 1) @ kernel + bias
        return lstm_scan(lambda z_t: z_t, zs, recurrent, unroll)

    return run


def jax_functions():
    functions = {}
    for name, make in [("per-step", per_step), ("hoisted", hoisted)]:
        for unroll in (1, 8):
            forward = make(unroll)
            loss = lambda params, x, f=forward: jnp.sum(f(params, x))  # noqa: E731
            functions[f"{name} unroll={unroll}"] = (
                jax.jit(forward),
                jax.jit(jax.grad(loss, argnums=(0, 1))),
            )
    return functions


def torch_functions(x_np):
    import torch

    device = "cuda"
    module = torch.nn.LSTM(F, U, batch_first=True, device=device)
    x = torch.tensor(x_np, device=device, requires_grad=True)

    def sync(fn):
        def run():
            out = fn()
            torch.cuda.synchronize()
            return out

        return run

    def forward():
        with torch.no_grad():
            return module(x)[0]

    def gradient():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x)[0].sum().backward()

    return sync(forward), sync(gradient)


def main():
    print("jax", jax.__version__, jax.devices(), flush=True)
    rng = np.random.default_rng(0)
    for steps in (100, 1000):
        x_np = rng.standard_normal((B, steps, F)).astype("float32")
        params_np = (
            (rng.standard_normal((F, 4 * U)) * 0.1).astype("float32"),
            (rng.standard_normal((U, 4 * U)) * 0.1).astype("float32"),
            np.zeros(4 * U, "float32"),
        )
        x, params = jnp.asarray(x_np), tuple(jnp.asarray(p) for p in params_np)
        calls = {}
        for name, (forward, gradient) in jax_functions().items():
            calls[name] = (
                functools.partial(forward, params, x),
                functools.partial(gradient, params, x),
            )
        try:
            calls["torch.nn.LSTM (cuDNN)"] = torch_functions(x_np)
        except Exception as error:  # no CUDA torch: JAX rows only
            print("torch:", error)
        times = {name: ([], []) for name in calls}
        for forward, gradient in calls.values():  # warm-up and compile
            jax.block_until_ready(forward())
            jax.block_until_ready(gradient())
        for _ in range(REPEATS):
            for name, (forward, gradient) in calls.items():
                for record, fn in zip(times[name], (forward, gradient), strict=True):
                    start = time.perf_counter()
                    jax.block_until_ready(fn())
                    record.append(time.perf_counter() - start)
        print(f"\n{B}x{steps}x{F}x{U}, median of {REPEATS} (ms): forward, gradient")
        for name, (forward, gradient) in times.items():
            print(
                f"  {name:24s} {np.median(forward) * 1e3:8.2f} {np.median(gradient) * 1e3:8.2f}",
                flush=True,
            )


def keras_main():
    from keras_lstm_variants.commands import bench_timing as bench
    from keras_lstm_variants.kernels import jax_scan

    unrolls = (1, 4, 8, 16)
    for steps in (100, 1000):
        shape = bench.Shape(batch=B, time=steps, features=F, units=U)
        x = np.random.default_rng(0).standard_normal((B, steps, F), dtype=np.float32)
        models = {}
        for kind in ("lstm", "gru"):
            for unroll in unrolls:
                jax_scan.ACCELERATOR_UNROLL = unroll
                model = bench.build_model(kind, shape, jit_compile=True)
                y = bench.target(model, shape)
                model.train_on_batch(x, y)  # traced and compiled with this unroll
                model.predict_on_batch(x)
                models[kind, unroll] = model, y
        times = {key: ([], []) for key in models}
        for _ in range(REPEATS):
            for key, (model, y) in models.items():
                times[key][0].append(bench.timed(model.train_on_batch, x, y))
                times[key][1].append(bench.timed(model.predict_on_batch, x))
        print(f"\nKeras, {shape}, min of {REPEATS} (ms): train_on_batch, predict_on_batch")
        for (kind, unroll), (train, predict) in times.items():
            print(
                f"  {kind:5s} unroll={unroll:<3d} {min(train) * 1e3:8.2f} {min(predict) * 1e3:8.2f}"
            )


if __name__ == "__main__":
    import sys

    keras_main() if sys.argv[1:] == ["keras"] else main()

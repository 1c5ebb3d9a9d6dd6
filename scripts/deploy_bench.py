"""Deployment measurements for docs/deploy.md: quantized TFLite, and inference latency per
runtime.

``python scripts/deploy_bench.py quantization`` trains each variant briefly on the adding
problem (16 units, 50 steps), exports it to TFLite as float32, float16, dynamic-range and int8
(calibrated on 32 training sequences), and prints, per variant and mode, the file size and the
largest and mean absolute difference of the quantized file's predictions from the float file's
on 256 test sequences (LiteRT's interpreter), with the float file's own mean squared error.

``python scripts/deploy_bench.py latency`` times inference, side by side in one process, at
batch x time x features x units = 1x100x64x256 and 16x1000x32x128: Keras/TensorFlow (the
model's ``predict_on_batch``), ONNX Runtime and OpenVINO (float32) on ``klv.export_onnx``'s
file, LiteRT on ``klv.export_tflite``'s, and ``torch.nn.LSTM`` (when torch is installed, timed in a
process of its own) as an anchor; min of ``--repeats`` runs after one warm-up. ``--variants``
and ``--shapes`` narrow it.
Results are printed as a Markdown table and written as JSON (``--out``) as they are measured.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_lstm_variants as klv
from keras_lstm_variants import registry
from keras_lstm_variants.commands.tasks import adding_data

SHAPES = {"1x100x64x256": (1, 100, 64, 256), "16x1000x32x128": (16, 1000, 32, 128)}


def _litert(path, key="serving_default"):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=path).get_signature_runner(key)


def quantization(args):
    length, units = 50, 16
    x_train, y_train = adding_data(length, 2048, seed=0)
    x_test, y_test = adding_data(length, 256, seed=1)
    rows = []
    print("| variant | mode | size (KiB) | max abs diff | mean abs diff | float MSE |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            keras.utils.set_random_seed(0)
            model = keras.Sequential(
                [
                    keras.Input((length, x_train.shape[-1])),
                    registry.get(name).layer(units),
                    keras.layers.Dense(1),
                ]
            )
            model.compile("adam", "mse")
            model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)
            outputs = {}
            for mode in (None, "float16", "dynamic", "int8"):
                path = os.path.join(tmp, f"{name}-{mode}.tflite")
                data = [x_train[i : i + 1].astype("float32") for i in range(32)]
                klv.export_tflite(
                    model,
                    path,
                    quantize=mode,
                    representative_data=data if mode == "int8" else None,
                )
                run = _litert(path)
                outputs[mode] = np.concatenate(
                    [run(inputs=x_test[i : i + 1].astype("float32"))["output"] for i in range(256)]
                )
                diff = np.abs(outputs[mode] - outputs[None])
                row = {
                    "variant": name,
                    "mode": mode or "float32",
                    "size_kib": os.path.getsize(path) / 1024,
                    "max_abs_diff": float(diff.max()),
                    "mean_abs_diff": float(diff.mean()),
                    "float_mse": float(np.mean((outputs[None][:, 0] - y_test.reshape(-1)) ** 2)),
                }
                rows.append(row)
                print(
                    f"| {name} | {row['mode']} | {row['size_kib']:.1f} | "
                    f"{row['max_abs_diff']:.2e} | {row['mean_abs_diff']:.2e} | "
                    f"{row['float_mse']:.4f} |",
                    flush=True,
                )
                _write(args.out, rows)


def _time(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def latency(args):
    import onnxruntime
    import openvino

    has_torch = importlib.util.find_spec("torch") is not None
    rows = []
    print("| variant | shape | runtime | file | ms |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for shape_name in args.shapes:
            batch, length, features, units = SHAPES[shape_name]
            x = np.random.default_rng(0).normal(size=(batch, length, features)).astype("float32")
            if has_torch:
                rows.append(
                    _row("torch.nn.LSTM", shape_name, "torch", "", _torch_ms(shape_name, args))
                )
            for name in args.variants:
                model = keras.Sequential(
                    [keras.Input((None, features)), registry.get(name).layer(units)]
                )
                rows.append(
                    _row(
                        name,
                        shape_name,
                        "tensorflow",
                        "",
                        _time(lambda m=model, x=x: m.predict_on_batch(x), args.repeats),
                    )
                )
                path = klv.export_onnx(model, os.path.join(tmp, f"{name}.onnx"))
                import onnx

                ops = {node.op_type for node in onnx.load(path).graph.node}
                kind = "LSTM" if "LSTM" in ops else "GRU" if "GRU" in ops else "Scan"
                session = onnxruntime.InferenceSession(path)
                rows.append(
                    _row(
                        name,
                        shape_name,
                        "onnxruntime",
                        kind,
                        _time(lambda s=session, x=x: s.run(None, {"inputs": x}), args.repeats),
                    )
                )
                try:
                    compiled = openvino.Core().compile_model(
                        path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
                    )
                    ms = _time(lambda c=compiled, x=x: c(x), args.repeats)
                except Exception as error:  # a runtime that refuses the file: say so
                    ms = f"fails: {str(error).splitlines()[0][:60]}"
                rows.append(_row(name, shape_name, "openvino", kind, ms))
                tflite = klv.export_tflite(
                    model, os.path.join(tmp, f"{name}.tflite"), batch_size=batch
                )
                run = _litert(tflite)
                rows.append(
                    _row(
                        name,
                        shape_name,
                        "litert",
                        "builtins",
                        _time(lambda r=run, x=x: r(inputs=x), args.repeats),
                    )
                )
                _write(args.out, rows)


#: The torch anchor, timed in a process of its own: torch beside TensorFlow in one process
#: fights it for threads (and PyPI's torch imports triton's LLVM beside TensorFlow's).
TORCH_ANCHOR = """
import sys, time, numpy as np, torch
batch, length, features, units, repeats = map(int, sys.argv[1:])
lstm = torch.nn.LSTM(features, units, batch_first=True).eval()
x = np.random.default_rng(0).normal(size=(batch, length, features)).astype("float32")
x = torch.from_numpy(x)
best = float("inf")
with torch.inference_mode():
    lstm(x)
    for _ in range(repeats):
        start = time.perf_counter()
        lstm(x)
        best = min(best, time.perf_counter() - start)
print(best * 1e3)
"""


def _torch_ms(shape_name, args):
    sizes = [str(n) for n in (*SHAPES[shape_name], args.repeats)]
    result = subprocess.run(
        [sys.executable, "-c", TORCH_ANCHOR, *sizes], capture_output=True, text=True
    )
    if result.returncode != 0:
        return f"fails: {(result.stderr.strip().splitlines() or ['?'])[-1][:60]}"
    return float(result.stdout.split()[-1])


def _row(variant, shape, runtime, kind, ms):
    text = f"{ms:.1f}" if isinstance(ms, float) else ms
    print(f"| {variant} | {shape} | {runtime} | {kind} | {text} |", flush=True)
    return {"variant": variant, "shape": shape, "runtime": runtime, "file": kind, "ms": ms}


def _write(path, rows):
    if path:
        with open(path, "w") as file:
            json.dump(rows, file, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("quantization", "latency"))
    parser.add_argument("--variants", default=",".join(klv.VARIANTS))
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON file written as results arrive")
    args = parser.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in klv.VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; known: {', '.join(klv.VARIANTS)}")
    args.shapes = [s for s in args.shapes.split(",") if s]
    if any(s not in SHAPES for s in args.shapes):
        parser.error(f"--shapes: known shapes are {', '.join(SHAPES)}")
    if keras.backend.backend() != "tensorflow":
        sys.exit("deploy_bench: run with KERAS_BACKEND=tensorflow (export traces TensorFlow)")
    {"quantization": quantization, "latency": latency}[args.what](args)


if __name__ == "__main__":
    main()

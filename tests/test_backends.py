"""Every Keras backend: the package without TensorFlow, and weights that cross backends.

Each backend runs in its own subprocess (a process has one Keras backend). The checks:

* ``import keras_lstm_variants`` and everything that writes no TensorFlow artifact (cells,
  layers, ``fit`` under jit, ``.keras`` round trips, ``trace_gates``) work under
  ``KERAS_BACKEND=jax`` with ``import tensorflow`` blocked by a meta-path hook, as on a
  machine where TensorFlow is not installed; the TensorFlow-only functions say what to install.
* A model with one branch per variant is trained on TensorFlow, saved (``.keras``), loaded on
  JAX and on torch, and predicts the same (1e-5); trained on JAX, it loads into TensorFlow.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Blocks ``import tensorflow`` (and its submodules) in the process that runs it.
BLOCK_TENSORFLOW = """
import importlib.abc, sys

class BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, BlockTensorFlow())
"""


def run_python(code, backend, *args, timeout=600):
    """Run ``code`` (with ``args``) in a fresh Python under ``KERAS_BACKEND=backend``; fail
    with its output; return its stdout."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (
        f"{backend} run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done.stdout


def test_the_package_works_without_tensorflow(tmp_path):
    pytest.importorskip("jax")
    code = BLOCK_TENSORFLOW + textwrap.dedent(
        f"""
        import json, sys
        try:
            import tensorflow
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError("the hook did not block tensorflow")
        import keras, numpy as np
        import keras_lstm_variants as klv
        report = {{"backend": keras.backend.backend()}}
        x = np.random.default_rng(0).normal(size=(3, 5, 2)).astype("float32")
        y = np.random.default_rng(1).normal(size=(3, 1)).astype("float32")
        inputs = keras.Input((5, 2))
        branches = [layer(4, name=name)(inputs) for name, (_, layer) in klv.VARIANTS.items()]
        outputs = keras.layers.Dense(1)(keras.layers.Concatenate()(branches))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="adam", loss="mse", jit_compile=True)
        model.fit(x, y, epochs=2, verbose=0)
        path = {str(tmp_path / "model.keras")!r}
        model.save(path)
        again = keras.saving.load_model(path)
        np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0),
                                   rtol=1e-6, atol=1e-6)
        traced = klv.trace_gates(model, x)
        report["traced"] = sorted(traced)
        errors = {{}}
        for call in (lambda: klv.export_saved_model(model, {str(tmp_path / "sm")!r}),
                     lambda: klv.export_tflite(model, {str(tmp_path / "m.tflite")!r},
                                               time_steps=5)):
            try:
                call()
            except Exception as error:
                errors[len(errors)] = f"{{type(error).__name__}}: {{error}}"
        report["errors"] = errors
        report["tensorflow_imported"] = any(m.split(".")[0] == "tensorflow" for m in sys.modules)
        print(json.dumps(report))
        """
    )
    report = json.loads(run_python(code, "jax").strip().splitlines()[-1])
    assert report["backend"] == "jax" and not report["tensorflow_imported"]
    assert report["traced"], "trace_gates found no variant layer"
    # the two TensorFlow-only functions fail clearly, saying what to install
    assert len(report["errors"]) == 2
    for error in report["errors"].values():
        assert "tensorflow" in error.lower() and "install" in error.lower(), error


#: Trains (backend ``source``) or loads (other backends) a model with one branch per variant.
CROSS = """
import json, sys
import keras, numpy as np
import keras_lstm_variants as klv
mode, path = sys.argv[-2:]
x = np.random.default_rng(0).normal(size=(3, 6, 2)).astype("float32")
if mode == "train":
    keras.utils.set_random_seed(1)
    y = np.random.default_rng(1).normal(size=(3, 1)).astype("float32")
    inputs = keras.Input((6, 2))
    branches = [layer(4, name=name)(inputs) for name, (_, layer) in klv.VARIANTS.items()]
    outputs = keras.layers.Dense(1)(keras.layers.Concatenate()(branches))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    before = model.predict(x, verbose=0)
    model.fit(x, y, epochs=3, verbose=0)
    model.save(path + ".keras")
    predicted = model.predict(x, verbose=0)
    assert not np.allclose(before, predicted), "training changed nothing"
else:
    model = keras.saving.load_model(path + ".keras")
    predicted = model.predict(x, verbose=0)
np.save(path + f".{keras.backend.backend()}.npy", predicted)
print(json.dumps({"backend": keras.backend.backend(), "layers": len(model.layers)}))
"""


@pytest.mark.parametrize(
    "source, targets",
    [("tensorflow", ("jax", "torch")), ("jax", ("tensorflow",))],
    ids=["tensorflow-to-jax-and-torch", "jax-to-tensorflow"],
)
def test_weights_trained_on_one_backend_predict_the_same_on_another(source, targets, tmp_path):
    pytest.importorskip(source)
    installed = [name for name in targets if importlib.util.find_spec(name) is not None]
    if not installed:
        pytest.skip(f"none of the target backends {targets} is installed")
    targets = installed
    path = str(tmp_path / "model")
    run_python(CROSS, source, "train", path)
    expected = np.load(f"{path}.{source}.npy")
    for backend in targets:
        run_python(CROSS, backend, "load", path)
        np.testing.assert_allclose(
            np.load(f"{path}.{backend}.npy"), expected, rtol=1e-5, atol=1e-5, err_msg=backend
        )

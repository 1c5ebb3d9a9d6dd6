"""The package imports, and its export functions fail clearly, where TensorFlow is missing.

A GPU machine set up for JAX and PyTorch has no TensorFlow: ``import keras_lstm_variants`` must
not need it, and ``export_saved_model`` / ``export_tflite`` (which write TensorFlow artifacts)
must say what to install. The check runs in a fresh Python under ``KERAS_BACKEND=jax`` in which
``import tensorflow`` fails, as it does where TensorFlow is not installed.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="needs JAX to run Keras without TensorFlow"
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WITHOUT_TENSORFLOW = textwrap.dedent(
    """
    import importlib.machinery
    import sys

    class Block:
        # Makes tensorflow look uninstalled: a spec without a loader fails the import.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                return importlib.machinery.ModuleSpec(name, None)

    blocker = Block()
    sys.meta_path.insert(0, blocker)
    import keras
    import keras_lstm_variants as klv

    assert "tensorflow" not in sys.modules, "importing the package imported TensorFlow"
    model = keras.Sequential([keras.Input((None, 3)), klv.LSTM(4)])
    for export, kwargs in ((klv.export_saved_model, {}), (klv.export_tflite, {"time_steps": 5})):
        try:
            export(model, "m", **kwargs)
        except ImportError as error:
            assert "pip install tensorflow" in str(error), error
            print("clear:", export.__name__)
    # With TensorFlow installed but Keras on JAX: export says to use the TensorFlow backend.
    sys.meta_path.remove(blocker)
    try:
        klv.export_saved_model(model, "m")
    except RuntimeError as error:
        assert "KERAS_BACKEND=tensorflow" in str(error), error
        print("clear: backend")
    """
)


def test_import_without_tensorflow_and_a_clear_export_error(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:3] == [
        "clear: export_saved_model",
        "clear: export_tflite",
        "clear: backend",
    ], result.stdout
    assert not os.listdir(tmp_path)

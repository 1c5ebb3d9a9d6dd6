"""Test set-up: the Keras backend, TensorFlow-only tests, console scripts on PATH.

The suite runs on the backend that ``KERAS_BACKEND`` names (TensorFlow when unset):
``KERAS_BACKEND=jax python -m pytest`` or ``KERAS_BACKEND=torch ...``. A test that is
TensorFlow-only by nature (SavedModel, TFLite, ``tf.summary``, ``tf.distribute``) carries
``@pytest.mark.tensorflow_only("why")`` (or a module-level ``pytestmark``) and is skipped, with
that reason, on the other backends.
"""

import os
import sys

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Console scripts (keras-lstm-variants, saved_model_cli, tensorboard) live beside this Python;
# put that directory first on PATH so subprocesses find them even where it is not on PATH
# (e.g. pyenv before a rehash, or a venv that was not activated).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

BACKEND = os.environ["KERAS_BACKEND"]

if BACKEND == "torch":
    import torch

    # On a GPU, cuDNN may compute float32 in TF32 (10-bit mantissa products), which PyTorch
    # allows by default; the tests' tolerances are float32's. No effect on a CPU.
    torch.backends.cudnn.allow_tf32 = False


@pytest.fixture
def policy(request):
    """Set the global dtype policy (``request.param``, e.g. ``"mixed_float16"``, given with
    ``indirect=True``) for one test; restore the previous one afterwards."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_dtype_policy(previous)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "float64_finite_differences: a float64 gradient check against central differences; "
        "runs on TensorFlow only (see FLOAT64_REASON)",
    )
    config.addinivalue_line(
        "markers",
        "tensorflow_only(reason): needs the TensorFlow backend by nature (SavedModel, TFLite, "
        "tf.summary, tf.distribute); skipped on the others with the reason",
    )


def pytest_report_header(config):
    return f"KERAS_BACKEND={BACKEND}"


#: Why float64 finite-difference checks are skipped off TensorFlow (measured: tests/test_cells.py).
FLOAT64_REASON = (
    "Keras computes float64 RNNs at float32 precision on this backend (the stock "
    "keras.layers.LSTM too), so a float64 central difference is float32 noise"
)


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    for item in items:
        if item.get_closest_marker("float64_finite_differences") is not None:
            item.add_marker(pytest.mark.skip(reason=f"{FLOAT64_REASON} (KERAS_BACKEND={BACKEND})"))
        marker = item.get_closest_marker("tensorflow_only")
        if marker is not None:
            why = marker.args[0] if marker.args else "TensorFlow-only"
            item.add_marker(pytest.mark.skip(reason=f"{why} (KERAS_BACKEND={BACKEND})"))

"""Guards the two private ``keras.src`` pieces that ``keras_lstm_variants/_compat.py`` imports.

If a Keras release moves or changes them, these tests fail with a pointed message instead of
the cells silently losing their dropout masks or the fast path calling a changed loop.
"""

import importlib.util
import inspect
import sys

import keras
import numpy as np
import pytest
from keras.src.layers.rnn import rnn as keras_rnn_module

import keras_lstm_variants as klv
from keras_lstm_variants import _compat


def test_keras_version_is_in_the_pinned_range():
    major, minor = (int(part) for part in keras.__version__.split(".")[:2])
    assert (3, 8) <= (major, minor) < (4, 0), keras.__version__


def test_dropout_rnn_cell_is_the_one_keras_rnn_checks_for():
    """``keras.layers.RNN`` prepares dropout masks only for instances of its own import."""
    assert _compat.DropoutRNNCell is keras_rnn_module.DropoutRNNCell
    assert issubclass(keras.layers.LSTMCell, _compat.DropoutRNNCell)
    for cell_class, _ in klv.VARIANTS.values():
        assert isinstance(cell_class(2), keras_rnn_module.DropoutRNNCell)


def test_dropout_rnn_cell_interface():
    for name in ("get_dropout_mask", "get_recurrent_dropout_mask", "reset_dropout_mask"):
        assert callable(getattr(_compat.DropoutRNNCell, name)), name
    cell = klv.LSTMCell(2, dropout=0.5, seed=1)
    mask = cell.get_dropout_mask(keras.ops.ones((3, 4)))
    assert cell.get_dropout_mask(keras.ops.ones((3, 4))) is mask  # cached for the sequence
    assert set(np.unique(np.asarray(mask))) <= {0.0, 2.0}
    cell.reset_dropout_mask()
    assert cell.get_dropout_mask(keras.ops.ones((3, 4))) is not mask


def test_backend_rnn_is_keras_loop_with_the_arguments_the_layers_pass():
    assert _compat.rnn is keras.src.backend.rnn
    parameters = inspect.signature(_compat.rnn).parameters
    for name in (
        "step_function",
        "inputs",
        "initial_states",
        "go_backwards",
        "mask",
        "unroll",
        "input_length",
        "zero_output_for_mask",
        "return_all_outputs",
    ):
        assert name in parameters, name


def test_missing_private_modules_raise_a_clear_import_error(monkeypatch):
    """A Keras without ``keras.src``'s pieces gets an ImportError naming the supported range."""
    monkeypatch.setitem(sys.modules, "keras.src.layers.rnn.dropout_rnn_cell", None)
    spec = importlib.util.spec_from_file_location("_compat_probe", _compat.__file__)
    with pytest.raises(ImportError, match=r"keras>=3\.8,<4"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))

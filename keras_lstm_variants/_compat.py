"""The two private Keras pieces this package reuses, imported in one place.

* ``DropoutRNNCell``: ``keras.layers.RNN`` prepares one dropout mask per sequence only for
  cells that inherit it, so our cells must, exactly as ``keras.layers.LSTMCell`` does.
* ``in_symbolic_scope``: True inside ``keras.SymbolicScope``, where every backend's
  ``compute_output_spec`` runs a layer on placeholders (gate tracing skips those passes).
* ``rnn``: the backend's time loop (``tf.while_loop`` on TensorFlow), which the sequence
  layers drive directly with each step's ``cell.gates`` (see ``kernels/keras_loop.py``).

Both live under ``keras.src``; setup.cfg pins ``keras<4`` and tests/test_compat.py fails loudly
if a Keras release moves them.
"""

try:
    from keras.src.backend import in_symbolic_scope, rnn
    from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell
except ImportError as error:  # pragma: no cover - exercised only on an unsupported Keras
    raise ImportError(
        "keras_lstm_variants needs keras>=3.8,<4 (it reuses keras.src's DropoutRNNCell and "
        f"backend.rnn); this Keras does not provide them: {error}"
    ) from error

__all__ = ["DropoutRNNCell", "in_symbolic_scope", "rnn"]

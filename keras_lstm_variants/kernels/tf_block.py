"""``tf-block`` (opt-in): TensorFlow's fused ``BlockLSTMV2`` kernel in inference.

TensorFlow's ``LSTMBlockFusedCell`` op: one op for the whole sequence, each step's products
and gate arithmetic in C++, called on the cell's weights. Its equations are the peephole
LSTM's with the output gate's peephole on the new ``c``, as ours, and its gate blocks are
Keras's (input, forget, candidate, output): ``w`` is ``[kernel; recurrent_kernel]``, and a gate
without a peephole gets a zero one. Its gradient is ``BlockLSTMGradV2`` (:func:`_block_lstm`):
exact, if slower than the cell's loop. As with ``torch-fused``, ``transition`` is not called
here; tests/test_eager_path.py proves the two equal.

Opt-in only (``loop="tf-block"``; ``loop="auto"`` never picks it): a graph that carries the op
(``jit_compile=False``, a SavedModel) does not convert to TFLite, whose converter has no such
op. It runs for cells that declare ``tf-block-lstm`` (the LSTM and the peephole LSTM, any
subset of peepholes) with the stock activations, float32, no option but ``use_bias``, no mask,
no zoneout, no ``unroll``, not ``LSTM(use_cudnn=False)``; in inference (``training`` not True)
with nothing recording a gradient (a ``GradientTape``: the cell's loop has the faster
gradient, and a second-order one), outside XLA (``jit_compile=True``: XLA has no kernel for
the op), with no GPU visible (unmeasured there). It is an inference kernel: set
``layer.loop = "tf-block"`` on a trained model before serving or exporting it. Above
:data:`BLOCK_MAX_BATCH` or :data:`BLOCK_MAX_BYTES` it runs Keras's loop (:func:`block_lstm`).
Measured speeds and the limits' reasons: docs/speed.md.
"""

import functools

from . import keras_loop
from ._conditions import declares, first, kernel_arithmetic, lstm_options, no_mask, on_backend
from ._conditions import steps_transition as _steps_transition

NAME = "tf-block"
#: The largest batch :func:`block_lstm` runs (docs/speed.md: faster than the cell's loop up
#: to 16, slower from 24).
BLOCK_MAX_BATCH = 16
#: The most memory :func:`block_lstm` may take for its outputs: the op keeps seven
#: ``(time, batch, units)`` tensors (every gate and state at every step) where the cell's loop
#: in inference keeps the states alone. 256 MiB is 4,681 steps at batch 16 and 128 units.
BLOCK_MAX_BYTES = 256 * 2**20


def block_fits(batch, time, units):
    """Whether a ``(batch, time, features)`` float32 input fits: a batch up to
    :data:`BLOCK_MAX_BATCH` and outputs within :data:`BLOCK_MAX_BYTES`. Python integers, or
    int64 tensors (at run time)."""
    return (batch <= BLOCK_MAX_BATCH) & (7 * 4 * batch * time * units <= BLOCK_MAX_BYTES)


def why_not(layer, call):
    cell = layer.cell
    return first(
        on_backend("tensorflow"),
        "training" if call.training else None,
        no_mask(call),
        declares(cell, "tf-block-lstm"),
        lambda: _steps_transition(layer, call),
        lambda: lstm_options(cell),
        lambda: kernel_arithmetic(cell),
        None if cell.compute_dtype == "float32" else f"dtype is {cell.compute_dtype}",
        "use_cudnn=False" if _drop_in_without_cudnn(layer) else None,
        lambda: _tensorflow_needs_loop(),
    )


def auto_skips(layer, call):
    """Opt-in: ``loop="auto"`` never takes it (TFLite's converter does not take the op)."""
    return "opt-in only (loop='tf-block')"


def _drop_in_without_cudnn(layer):
    """``LSTM(use_cudnn=False)``: the drop-in's user asked to keep off fused kernels."""
    return getattr(layer, "drop_in", False) and getattr(layer, "use_cudnn", "auto") is False


def _tensorflow_needs_loop():
    """Why TensorFlow needs the cell's loop here: tracing for XLA (``jit_compile=True``, a
    TPU), a gradient tape recording, or a GPU visible (``None``: none of them)."""
    import tensorflow as tf

    try:
        from tensorflow.python.eager.record import could_possibly_record
        from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
    except ImportError:  # moved in a later TensorFlow: step the cell
        return "this TensorFlow moved the functions that tell XLA and tapes apart"
    if GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return "compiled by XLA"
    if could_possibly_record():
        return "a gradient tape is recording"
    return "a GPU is visible" if _tensorflow_gpu() else None


@functools.cache
def _tensorflow_gpu():
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def run(layer, call):
    return block_lstm(layer, call)


def block_lstm(layer, call):
    """``(last_output, outputs, final_states)`` from ``BlockLSTMV2`` where :func:`block_fits`
    holds, else from Keras's loop (the op is slower above those batches and keeps every gate
    of every step); when the batch or time is known only at run time (a graph with free axes,
    e.g. a SavedModel), the graph holds both under ``tf.cond``."""
    import tensorflow as tf

    cell, sequences = layer.cell, call.sequences

    def block():
        return _block_lstm_layer(
            cell, sequences, call.initial_state, call.go_backwards, call.return_sequences
        )

    def loop():  # its states a list, as block's (tf.cond compares the structures)
        last, outputs, states = keras_loop.run(layer, call)
        return last, outputs, list(states)

    if None not in sequences.shape[:2]:
        batch, time = sequences.shape[:2]
        return block() if block_fits(batch, time, cell.units) else loop()
    batch, time = tf.unstack(tf.cast(tf.shape(sequences)[:2], tf.int64))
    return tf.cond(block_fits(batch, time, cell.units), block, loop)


def _block_lstm_layer(cell, sequences, initial_state, go_backwards, return_sequences):
    import tensorflow as tf

    x = tf.transpose(sequences, [1, 0, 2])  # (time, batch, features)
    if go_backwards:
        x = tf.reverse(x, [0])
    zeros = tf.zeros((cell.units,), x.dtype)
    peepholes = [
        cell.peephole_weights[gate].value if gate in cell.peepholes else zeros
        for gate in ("input", "forget", "output")
    ]
    bias = cell.bias.value if cell.bias is not None else tf.zeros((4 * cell.units,), x.dtype)
    h_0, c_0 = initial_state
    w = tf.concat([cell.kernel.value, cell.recurrent_kernel.value], 0)
    c, h = _block_lstm(x, c_0, h_0, w, *peepholes, bias, bool(cell.peepholes))
    last = h[-1]
    outputs = tf.transpose(h, [1, 0, 2]) if return_sequences else last[:, None]
    return last, outputs, [last, c[-1]]


def _block_lstm(x, c_0, h_0, w, wci, wcf, wco, b, use_peephole):
    """``BlockLSTMV2``'s cell states and outputs (time-major), differentiable.

    TensorFlow (2.21) registers ``BlockLSTM``'s gradient for ``BlockLSTMV2`` too, whose
    kernel reads the gates in the other layout (input, candidate, forget, output): the
    gradient with respect to ``x`` and the weights came out wrong. This one calls
    ``BlockLSTMGradV2``, the gradient made for the op."""
    import tensorflow as tf

    length = tf.cast(tf.shape(x)[0], tf.int64)

    @tf.custom_gradient
    def run(x, c_0, h_0, w, wci, wcf, wco, b):
        inputs = {"x": x, "cs_prev": c_0, "h_prev": h_0, "w": w, "b": b}
        inputs.update(wci=wci, wcf=wcf, wco=wco, seq_len_max=length, use_peephole=use_peephole)
        i, cs, f, o, ci, co, h = tf.raw_ops.BlockLSTMV2(**inputs)

        def gradient(d_cs, d_h):
            return tf.raw_ops.BlockLSTMGradV2(
                **inputs,
                **{"i": i, "cs": cs, "f": f, "o": o, "ci": ci, "co": co, "h": h},
                cs_grad=tf.zeros_like(cs) if d_cs is None else d_cs,
                h_grad=tf.zeros_like(h) if d_h is None else d_h,
            )

        return (cs, h), gradient

    return run(x, c_0, h_0, w, wci, wcf, wco, b)

"""``torch-eager``: on the torch backend, one input GEMM then a Python loop over
``transition``.

Keras runs the torch backend op by op, and its ``rnn`` spends more per step than the step
(tree flattening, per-step masking and output bookkeeping). Here the input projection of all
steps is one GEMM (``project`` is row-wise: the cell declares ``separable-input``), then a
plain loop calls ``transition``: what ``keras.layers.LSTM``'s own torch fallback does.
tests/test_eager_path.py proves it equal to ``keras.layers.RNN(cell)``. Measured speeds:
docs/speed.md.
"""

from keras import ops

from ._conditions import first, no_mask, on_backend, steps_transition

NAME = "torch-eager"


def why_not(layer, call):
    return first(on_backend("torch"), no_mask(call), lambda: steps_transition(layer, call))


def run(layer, call):
    return eager_rnn(
        layer.cell,
        call.sequences,
        call.initial_state,
        call.go_backwards,
        call.return_sequences,
        call.training,
    )


def eager_rnn(cell, sequences, initial_state, go_backwards, return_sequences, training):
    """``(last_output, outputs, final_states)`` of ``cell``'s steps over ``sequences``: the
    input projection of all steps in one GEMM, then a Python loop over ``transition``.
    ``outputs`` is ``(batch, time, units)`` with ``return_sequences``, else the last output
    ``(batch, 1, units)``. Keras ops only: it runs on every backend."""
    x = ops.swapaxes(sequences, 0, 1)  # (time, batch, features)
    if go_backwards:
        x = ops.flip(x, 0)
    time, batch = x.shape[0], x.shape[1]
    z_x = cell.project(ops.reshape(x, (time * batch, x.shape[2])), training)
    z_x = ops.reshape(z_x, (time, batch, z_x.shape[-1]))
    states, outputs = list(initial_state), []
    # unstack, not z_x[t]: the gradient of each index would be a zero-filled (time, ...) tensor
    for z_x_t in ops.unstack(z_x, axis=0):
        _, states = cell.transition(z_x_t, states, training)
        outputs.append(states[0])
    last = states[0]
    return last, ops.stack(outputs, axis=1) if return_sequences else last[:, None], states

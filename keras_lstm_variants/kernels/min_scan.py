"""``min-scan``: minGRU / minLSTM over the whole sequence as one linear scan.

For cells that state their recurrence ``h_t = a_t * h_{t-1} + b_t`` with coefficients from
the input alone (``coefficients(z_x)``, :mod:`keras_lstm_variants.cells.minimal`) and keep the
``transition`` written for them: every step's input is projected in one product
(``cell.project``), turned into the coefficients, and scanned
(:func:`~keras_lstm_variants.cells.minimal.scan_recurrence`). tests/test_minimal.py proves it
equal to stepping the cell's ``transition``. Masked steps keep the state; outputs at masked
steps, ``go_backwards`` (outputs in processing order), ``initial_state`` and ``stateful``
follow ``keras.layers.RNN``. Under a 16-bit dtype policy the scan runs in float32. It needs a
known number of steps (a SavedModel signature with a free time axis steps the cell).
"""

from keras import backend, ops

from ..cells.minimal import scan_recurrence
from ._conditions import first, known_steps, overrides_after

NAME = "min-scan"


def why_not(layer, call):
    return first(overrides_after(layer.cell, "coefficients"), known_steps(call))


def run(layer, call):
    sequences, mask = call.sequences, call.mask
    if call.go_backwards:
        sequences = ops.flip(sequences, axis=1)
        mask = None if mask is None else ops.flip(mask, axis=1)
    cell = layer.cell
    (h_0,) = call.initial_state
    z_x = cell.project(sequences, call.training)
    if cell.compute_dtype in ("float16", "bfloat16"):
        z_x, h_0 = ops.cast(z_x, "float32"), ops.cast(h_0, "float32")
    _, a, b = cell.coefficients(z_x)
    h = scan_recurrence(a, b, h_0, mask=mask)
    outputs = h
    if mask is not None:
        # The backend's time loop at a masked step outputs zeros (zero_output_for_mask),
        # else the previous output: on TensorFlow and torch zeros before the first
        # unmasked step, on JAX the carried state (h_0 there), i.e. h itself.
        shown = ops.cast(mask, "bool")
        if not call.zero_output_for_mask:
            shown = ops.cumsum(ops.cast(mask, "int32"), axis=1) > 0
        if call.zero_output_for_mask or backend.backend() != "jax":
            outputs = ops.where(ops.expand_dims(shown, -1), h, ops.zeros_like(h))
    last_output = outputs[:, -1]
    if not call.return_sequences:
        outputs = ops.expand_dims(last_output, 1)
    return last_output, outputs, [h[:, -1]]

"""``mlstm-parallel``: xLSTM's mLSTM in the paper's parallel form, all steps at once.

For cells with a whole-sequence form ``parallel(z, states, mask)`` (:class:`MLSTMCell`) that
keep the ``transition`` it was written for, on a layer built with ``parallel=True``: one GEMM
for the projections (``cell.project_sequence``), then ``(time, time)`` products per head
(memory grows with ``time**2``). tests/test_xlstm.py proves it equal to stepping the cell
(outputs, final state, gradients, masks, initial states).
"""

from keras import backend, ops

from ._conditions import first, overrides_after

NAME = "mlstm-parallel"


def why_not(layer, call):
    return first(
        overrides_after(layer.cell, "parallel"),
        None if getattr(layer, "parallel", False) is True else "the layer has parallel=False",
    )


def run(layer, call):
    """The parallel form, returning what Keras's time loop returns for the same input:
    ``(last_output, outputs, new_states)``, outputs in processing order."""
    sequences, mask = call.sequences, call.mask
    if call.go_backwards:
        sequences = ops.flip(sequences, axis=1)
        mask = None if mask is None else ops.flip(mask, axis=1)
    if mask is not None:
        mask = ops.cast(mask, "bool")
    initial_state = list(call.initial_state)
    z = layer.cell.project_sequence(sequences, call.training)
    h, memory = layer.cell.parallel(z, initial_state, mask)
    if mask is None:
        outputs, h_last = h, h[:, -1]
    else:
        outputs, h_last = _masked_outputs(h, initial_state[0], mask, call.zero_output_for_mask)
    return outputs[:, -1], outputs, [h_last, *memory]


def _masked_outputs(h, h_0, mask, zero_output_for_mask):
    """Outputs and the final ``h`` state under ``mask``, by the rule of Keras's time loop.

    A masked step carries the state over, so the ``h`` state after step ``t`` is ``h`` of the
    latest unmasked step ``s <= t`` (``h_0`` if none). The output there is zero with
    ``zero_output_for_mask``; otherwise the previous output: that latest ``h``, or before any
    unmasked step ``h_0`` on JAX (whose loop emits the carried state) and zeros on the other
    backends (whose loops start from a zero output). The latest ``h`` is gathered (exact, and
    only unmasked steps are read), never a weighted sum over the steps, in which a masked
    step's value would enter as ``0 * value``.
    """
    steps = ops.arange(ops.shape(h)[1])
    count = ops.cumsum(ops.cast(mask, "int32"), axis=1)  # unmasked steps so far
    causal = ops.expand_dims(steps, 0) <= ops.expand_dims(steps, 1)  # (t, s): s <= t
    seen = causal[None] & ops.expand_dims(mask, 1)  # (batch, t, s): s <= t and unmasked
    latest = ops.max(ops.where(seen, steps, ops.zeros_like(steps)), axis=-1)  # (batch, t)
    # A gather from the (batch * time, units) rows: ONNX's Gather on every exporter.
    batch, time = ops.shape(h)[0], ops.shape(h)[1]
    rows = latest + ops.expand_dims(ops.arange(batch) * time, 1)
    carried = ops.take(ops.reshape(h, (-1, ops.shape(h)[2])), rows, axis=0)
    h = ops.where(ops.expand_dims(mask, -1), h, ops.zeros_like(h))
    started = ops.expand_dims(count > 0, -1)
    h_last = ops.where(started[:, -1], carried[:, -1], h_0)
    if zero_output_for_mask:
        return h, h_last
    before = h_0 if backend.backend() == "jax" else ops.zeros_like(h_0)
    return ops.where(started, carried, ops.expand_dims(before, 1)), h_last

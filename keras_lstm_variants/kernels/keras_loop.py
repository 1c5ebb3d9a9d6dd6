"""``keras``: Keras's own time loop (the backend's ``rnn``) over the cell's ``gates``.

The fallback that always runs: every cell, option, mask, ``unroll`` and dtype. Each step
projects its own input (``W x_t + b``) and calls ``transition`` (then zoneout), exactly as
``keras.layers.RNN(cell)`` steps the cell.
"""

from .._compat import rnn

NAME = "keras"


def why_not(layer, call):
    return None


def run(layer, call):
    cell, sequences, training = layer.cell, call.sequences, call.training
    # Zoneout in training: every step's masks drawn here, before the loop, and fed to the
    # steps with the inputs, so each step has its own on every backend (JAX's scan traces
    # the step once: a draw inside it would repeat one mask at every step).
    # (A flat tuple: Keras's unrolled loop does not take deeper nesting.)
    zoneout_masks = (cell.zoneout_masks(sequences) if training else None) or {}

    def step(inputs_t, states):
        x_t, *masks_t = inputs_t if zoneout_masks else (inputs_t,)
        masks_t = dict(zip(zoneout_masks, masks_t, strict=True))
        _, new_states = cell.gates(x_t, list(states), training, zoneout_masks=masks_t)
        return new_states[0], new_states

    return rnn(
        step,
        (sequences, *zoneout_masks.values()) if zoneout_masks else sequences,
        list(call.initial_state),
        go_backwards=call.go_backwards,
        mask=call.mask,
        unroll=call.unroll,
        input_length=sequences.shape[1],
        zero_output_for_mask=call.zero_output_for_mask,
        return_all_outputs=call.return_sequences,
    )

"""Streaming: the model as a step function ``step(x_t, *states)``, each recurrent layer advanced
by its own cell (see :mod:`keras_lstm_variants.export`)."""

import numbers

import keras
import numpy as np

#: Layers that act on each time step independently, so they stream step by step unchanged
#: (those with an ``axis`` must act on the feature axes only; see :func:`_per_step_problem`).
PER_STEP_LAYERS = (
    keras.layers.Activation,
    keras.layers.AlphaDropout,
    keras.layers.BatchNormalization,
    keras.layers.Dense,
    keras.layers.Dropout,
    keras.layers.ELU,
    keras.layers.Embedding,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.LayerNormalization,
    keras.layers.LeakyReLU,
    keras.layers.Masking,
    keras.layers.PReLU,
    keras.layers.ReLU,
    keras.layers.Rescaling,
    keras.layers.Softmax,
)


def _state_names(layer, structure):
    """Names of recurrent ``layer``'s flat states: ``<layer>_<state>``, or
    ``<layer>_<i>_<state>`` for the i-th cell of a ``StackedRNNCells``."""
    cells = getattr(layer.cell, "cells", None)
    if cells is None:
        return [f"{layer.name}_{name}" for name in _cell_state_names(layer.cell, structure)]
    return [
        f"{layer.name}_{index}_{name}"
        for index, cell in enumerate(cells)
        for name in _cell_state_names(cell, structure[index])
    ]


def _cell_state_names(cell, structure):
    """A cell's ``state_names`` (h, c), or ``state0, state1, ...`` for cells without them."""
    count = len(keras.tree.flatten(structure))
    names = tuple(getattr(cell, "state_names", ()))
    return names if len(names) == count else [f"state{k}" for k in range(count)]


def _zero_states(cell, batch_size):
    """``cell``'s zero states for ``batch_size`` sequences, nested as the cell nests them."""
    if hasattr(cell, "get_initial_state"):
        return cell.get_initial_state(batch_size=batch_size)
    sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
    shapes = [
        (batch_size, *size) if isinstance(size, (list, tuple)) else (batch_size, size)
        for size in sizes
    ]
    return [keras.ops.zeros(shape, dtype=cell.compute_dtype) for shape in shapes]


def _output_state(layer, flat_states):
    """The flat state that is the cell's output ``h`` (the last cell's first state)."""
    cells = getattr(layer.cell, "cells", None)
    if cells is None:
        return flat_states[0]
    structure = _zero_states(layer.cell, 1)
    return flat_states[len(keras.tree.flatten(structure)) - len(keras.tree.flatten(structure[-1]))]


class Stream:
    """The model as a step function: ``step(x_t, *states) -> {"output", new states}``.

    Built once per export, it checks that the model can stream and records, per recurrent
    layer, the nesting of its states (read from the cell, any number of any shape) and their
    flat names; ``names``, ``shapes`` (without batch) and ``dtypes`` list the flat states.
    """

    def __init__(self, model):
        self.layers = _chain(model)
        self.structures, self.names, self.shapes, self.dtypes = {}, [], [], []
        per_step, masked = True, False
        for layer in self.layers:
            if isinstance(layer, keras.layers.Bidirectional):
                raise ValueError(
                    f"Cannot stream layer '{layer.name}': a Bidirectional layer reads the "
                    "sequence backwards too, so it needs the whole sequence. Export it with "
                    "streaming=False."
                )
            if isinstance(layer, keras.layers.RNN):
                if not per_step:
                    raise ValueError(
                        f"Cannot stream recurrent layer '{layer.name}': it follows a layer that "
                        "reduced the sequence to one vector."
                    )
                if layer.go_backwards:
                    raise ValueError(
                        f"Cannot stream layer '{layer.name}': go_backwards=True needs the whole "
                        "sequence."
                    )
                if masked:
                    _check_masked_output(layer)
                structure = _zero_states(layer.cell, 1)
                flat = keras.tree.flatten(structure)
                self.structures[layer.name] = structure
                self.names += _state_names(layer, structure)
                self.shapes += [tuple(t.shape[1:]) for t in flat]
                self.dtypes += [keras.backend.standardize_dtype(t.dtype) for t in flat]
                per_step = layer.return_sequences
                masked = masked and per_step
            elif per_step:
                problem = _per_step_problem(layer, masked)
                if problem:
                    raise ValueError(
                        f"Cannot stream layer '{layer.name}' ({type(layer).__name__}): {problem}"
                    )
                masked = masked or _makes_mask(layer)
        if not self.structures:
            raise ValueError(f"Model '{model.name}' has no recurrent layer to stream.")

    def initial_state(self, batch_size):
        """The zero states for ``batch_size`` sequences, keyed by state name."""
        flat = []
        for layer in self.layers:
            if layer.name in self.structures:
                flat += keras.tree.flatten(_zero_states(layer.cell, batch_size))
        return dict(zip(self.names, flat, strict=True))

    def step(self, x_t, *states):
        """One time step through every layer; each recurrent layer advances its own cell.

        In the per-step part of the model (before the last sequence layer's output is reduced),
        layers see the step as a sequence of length 1, exactly as they saw the sequence."""
        states, new_states = list(states), []
        per_step, mask = True, None
        for layer in self.layers:
            if layer.name in self.structures:
                structure = self.structures[layer.name]
                count = len(keras.tree.flatten(structure))
                old = states[:count]
                del states[:count]
                layer_states = keras.tree.pack_sequence_as(structure, old)
                output, layer_states = layer.cell(x_t, layer_states, training=False)
                flat = keras.tree.flatten(layer_states)
                if mask is not None:
                    keep = [keras.ops.reshape(mask, (-1,) + (1,) * (len(s.shape) - 1)) for s in old]
                    flat = [
                        keras.ops.where(k, n, o) for k, n, o in zip(keep, flat, old, strict=True)
                    ]
                    empty = (
                        keras.ops.zeros_like(output)
                        if layer.zero_output_for_mask
                        else _output_state(layer, old)
                    )
                    output = keras.ops.where(keras.ops.expand_dims(mask, -1), output, empty)
                new_states += flat
                x_t = output
                per_step = layer.return_sequences
                mask = mask if per_step else None
            elif per_step:
                sequence = keras.ops.expand_dims(x_t, 1)
                if _makes_mask(layer):
                    step_mask = layer.compute_mask(sequence)[:, 0]
                    mask = step_mask if mask is None else keras.ops.logical_and(mask, step_mask)
                x_t = layer(sequence, training=False)[:, 0]
            else:
                x_t = layer(x_t, training=False)
        return {"output": x_t, **dict(zip(self.names, new_states, strict=True))}


def _makes_mask(layer):
    return isinstance(layer, keras.layers.Masking) or (
        isinstance(layer, keras.layers.Embedding) and layer.mask_zero
    )


def _check_masked_output(layer):
    """A masked step repeats the layer's last output: that must be a state of the cell."""
    if layer.zero_output_for_mask:
        return
    structure = _zero_states(layer.cell, 1)
    output_state = _output_state(layer, keras.tree.flatten(structure))
    try:
        output_shape = tuple(layer.output.shape[-1:])
    except (AttributeError, ValueError):
        output_shape = None
    if tuple(output_state.shape[1:]) != output_shape:
        raise ValueError(
            f"Cannot stream layer '{layer.name}' behind a mask: a padding step repeats the "
            "layer's last output, which its cell does not keep as a state."
        )


def _rank(layer):
    try:
        return len(keras.tree.flatten(layer.input)[0].shape)
    except (AttributeError, ValueError, IndexError):
        return None


def _per_step_problem(layer, masked):
    """Why ``layer`` does not act on each time step of its input alone, or ``None``."""
    if isinstance(layer, keras.layers.TimeDistributed):
        return None
    if not isinstance(layer, PER_STEP_LAYERS):
        return (
            "only recurrent layers and per-time-step layers (Dense, Embedding, normalization, "
            "activations, dropout, TimeDistributed) may act on the sequence."
        )
    rank = _rank(layer)
    if rank is None:
        return "its input shape is unknown."
    axis = getattr(layer, "axis", None)
    if axis is not None:
        axes = [axis] if isinstance(axis, numbers.Integral) else list(axis)
        if any(int(a) % rank < 2 for a in axes):
            return (
                f"axis={axis!r} reaches across time steps (or the batch) of its input of rank "
                f"{rank}; only the feature axes (2 and up, or -1) act on each step alone."
            )
    if isinstance(layer, keras.layers.Softmax) and masked:
        return "a Softmax behind a mask (Embedding(mask_zero=True), Masking) mixes the mask in."
    if isinstance(layer, keras.layers.PReLU) and layer.alpha.shape[0] != 1:
        return (
            "its alpha has one value per time step; build it with shared_axes=[1] to share "
            "alpha across time."
        )
    if isinstance(layer, keras.layers.Rescaling):
        for name in ("scale", "offset"):
            shape = np.shape(getattr(layer, name))
            if len(shape) >= rank - 1 and shape[-(rank - 1)] != 1:
                return f"its {name} has one value per time step."
    return None


def _chain(model):
    """``model``'s layers, checked to form a single chain input -> ... -> output."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        return layers
    expected = model.inputs[0]
    for layer in layers:
        try:
            is_next = layer.input is expected
            expected = layer.output
        except (AttributeError, ValueError):
            is_next = False
        if not is_next:
            raise ValueError(
                f"Cannot stream model '{model.name}': streaming needs a chain of layers (each "
                f"feeding the next), but layer '{layer.name}' is not fed by the previous one."
            )
    if expected is not model.outputs[0] or len(model.outputs) != 1:
        raise ValueError(f"Cannot stream model '{model.name}': its output is not its last layer's.")
    return layers

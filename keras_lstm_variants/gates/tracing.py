"""Gate inspection: trace every gate of every variant layer, and log it to TensorBoard.

:func:`trace_gates` runs the model once in inference mode and, inside each variant layer's
call, takes what Keras hands to the layer's time loop (the input sequence, the mask and the
initial state) and steps it one time step at a time through the cell's own
:meth:`~keras_lstm_variants.cells.base.RecurrentCell.gates`, the method the layer's ``call``
uses, so the traced gates are the layer's gates, not a second copy of the equations.

:class:`GateStatistics` is a ``keras.callbacks.Callback`` that traces a fixed probe batch at the
end of every ``every_n_epochs``-th epoch and writes, per layer and gate, the statistics of
Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding Recurrent Networks": the mean,
the left-saturated fraction (gate < 0.1) and the right-saturated fraction (gate > 0.9), plus
histograms, a gate-by-time heatmap and the per-unit saturation scatter plot.
"""

import contextlib
import numbers
import os
import uuid

import keras
import numpy as np
import tensorflow as tf

from ..cells.base import RecurrentCell

#: Keys of a trace that hold states rather than gates: the cell state and the output.
STATE_KEYS = ("c", "h")

#: Range of each gate's activation: sigmoid gates (0, 1), the tanh candidate (-1, 1). A gate
#: is saturated within 0.1 of a bound (Karpathy et al.: < 0.1 left, > 0.9 right).
RANGES = {"candidate": (-1.0, 1.0)}
DEFAULT_RANGE = (0.0, 1.0)
SATURATION_MARGIN = 0.1


# --------------------------------------------------------------------------- finding layers
def _cells(rnn):
    """The cells an RNN layer steps through: the stack's cells, or its one cell."""
    cell = rnn.cell
    return list(cell.cells) if isinstance(cell, keras.layers.StackedRNNCells) else [cell]


def _walk(layer, path):
    if isinstance(layer, keras.layers.Bidirectional):
        yield from _walk(layer.forward_layer, f"{path}/forward")
        yield from _walk(layer.backward_layer, f"{path}/backward")
    elif isinstance(layer, keras.layers.RNN):
        if any(isinstance(cell, RecurrentCell) for cell in _cells(layer)):
            yield path, layer
    elif isinstance(layer, keras.Model):
        for sub in layer.layers:
            yield from _walk(sub, f"{path}/{sub.name}")


def find_variant_layers(model):
    """``{path: rnn_layer}`` for every ``keras.layers.RNN`` in ``model`` that steps a variant cell.

    Paths are layer names joined by ``/`` through nested models; the two halves of a
    ``Bidirectional`` are ``<name>/forward`` and ``<name>/backward``.
    """
    roots = model.layers if isinstance(model, keras.Model) else [model]
    found = {}
    for root in roots:
        for path, rnn in _walk(root, root.name):
            if all(rnn is not seen for seen in found.values()):
                found[path] = rnn
    return found


def check_has_variant_layer(model, argument="model"):
    """Return :func:`find_variant_layers` of ``model``; raise naming ``argument`` if empty."""
    found = find_variant_layers(model)
    if not found:
        raise ValueError(
            f"Argument `{argument}` contains no variant layer: gate inspection needs a "
            "keras_lstm_variants LSTM, PeepholeLSTM, CIFGLSTM or GRU layer, or a "
            "keras.layers.RNN over one of their cells (possibly inside Bidirectional or a "
            f"nested model); {getattr(model, 'name', model)!r} has none."
        )
    return found


def check_input_shape(model, x, argument="x"):
    """Raise naming ``argument`` unless ``x`` fits ``model.inputs`` (when the model has them)."""
    try:
        specs = keras.tree.flatten(model.inputs)
    except (AttributeError, ValueError):  # a subclassed or not yet built model: Keras checks
        return
    if isinstance(x, dict):  # matched by name, not order: Keras checks
        return
    arrays = keras.tree.flatten(x)
    if len(arrays) != len(specs):
        raise ValueError(
            f"Argument `{argument}` must hold {len(specs)} input array(s) for model "
            f"{model.name!r}; received {len(arrays)}."
        )
    for array, spec in zip(arrays, specs):
        shape, expected = tuple(np.shape(array)), tuple(spec.shape)
        if len(shape) != len(expected) or any(
            e is not None and s != e for s, e in zip(shape, expected)
        ):
            raise ValueError(
                f"Argument `{argument}` must have shape {expected} (None: any size) to feed "
                f"model {model.name!r}; received shape {shape}."
            )


def check_mask(x, mask):
    """``mask`` as a boolean (batch, time) array matching ``x``'s batch (``None`` stays)."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    batch = np.shape(keras.tree.flatten(x)[0])[0]
    if mask.ndim != 2 or mask.shape[0] != batch:
        raise ValueError(
            f"Argument `mask` must have shape (batch={batch}, time); received shape {mask.shape}."
        )
    return mask


# ------------------------------------------------------------------------------- tracing
@contextlib.contextmanager
def _tracing(layers, extra_mask=None):
    """Trace every time loop each RNN layer runs: ``{id(layer): [traces of each call]}``.

    Wraps each layer's ``inner_loop`` (where ``keras.layers.RNN.call`` hands over the input,
    the resolved initial state and the mask) for the duration of the block, and traces the
    cells right there, inside the layer's call, under its dtype policy (mixed precision reads
    the weights as float16 there). ``extra_mask`` (batch, time) is combined with the mask
    Keras passes (logical and) and used by the layer itself too, so later layers see what
    Keras computes under that mask. Stateful layers get their state back afterwards: tracing
    leaves the model as it found it.
    """
    traces = {id(rnn): [] for rnn in layers.values()}
    saved = [
        (variable, variable.numpy())
        for rnn in layers.values()
        if rnn.stateful and getattr(rnn, "states", None) is not None
        for variable in keras.tree.flatten(rnn.states)
    ]

    def tracer(path, rnn):
        original = rnn.inner_loop

        def inner_loop(sequences, initial_state, mask, training=False):
            if isinstance(mask, (list, tuple)):
                mask = mask[0]
            if extra_mask is not None:
                if sequences.shape[1] != extra_mask.shape[1]:
                    raise ValueError(
                        f"Argument `mask` has {extra_mask.shape[1]} time steps but layer "
                        f"{path!r} receives sequences of {sequences.shape[1]} steps."
                    )
                mask = extra_mask if mask is None else keras.ops.logical_and(mask, extra_mask)
            if tf.executing_eagerly():  # not the symbolic pass that builds an unbuilt model
                traces[id(rnn)].append(_trace_rnn(rnn, sequences, initial_state, mask))
            return original(sequences, initial_state, mask, training=training)

        return inner_loop

    for path, rnn in layers.items():
        rnn.inner_loop = tracer(path, rnn)
    try:
        yield traces
    finally:
        for rnn in layers.values():
            del rnn.inner_loop  # the class's method shows through again
        for variable, value in saved:
            variable.assign(value)


def _numpy(tensor):
    array = keras.ops.convert_to_numpy(tensor)
    return array.astype(np.float32) if array.dtype.itemsize < 4 else array


def _trace_cell(cell, inputs, states, mask, go_backwards):
    """Step ``cell`` over ``inputs`` (batch, time, features) as ``keras.layers.RNN`` does.

    Steps run in reverse when ``go_backwards``, but every array is stored at its step's
    position on the original time axis. Where ``mask`` (batch, time) is False the state is
    carried over unchanged (Keras's rule) and the traced values are NaN. Returns
    ``(outputs, trace)``: the per-step outputs ``h`` (the next stacked cell's input) and, for a
    variant cell, ``{gate: (batch, time, units)} | {"c": ..., "h": ...}`` (else ``None``).
    """
    time = inputs.shape[1]
    steps = {}
    for t in reversed(range(time)) if go_backwards else range(time):
        if isinstance(cell, RecurrentCell):
            gates, new_states = cell.gates(inputs[:, t], states, training=False)
            state = dict(zip(cell.state_names, new_states))
            steps[t] = {**gates, "c": state.get("c", state["h"]), "h": state["h"]}
        else:  # a stock cell in a stack: stepped for its output, not traced
            output, new_states = cell(inputs[:, t], states)
            new_states = keras.tree.flatten(new_states)
            steps[t] = {"h": output}
        if mask is not None:
            keep = mask[:, t : t + 1]
            new_states = [keras.ops.where(keep, n, s) for n, s in zip(new_states, states)]
        states = list(new_states)
    outputs = keras.ops.stack([steps[t]["h"] for t in range(time)], axis=1)
    if not isinstance(cell, RecurrentCell):
        return outputs, None
    trace = {}
    for key in steps[0]:
        array = np.stack([_numpy(steps[t][key]) for t in range(time)], axis=1)
        if mask is not None:
            array[~mask] = np.nan
        trace[key] = array
    return outputs, trace


def _trace_rnn(rnn, sequences, initial_state, mask):
    """``{suffix: trace}`` of one call of ``rnn``; suffix ``/cell_<k>`` in a stack."""
    mask = None if mask is None else np.asarray(keras.ops.convert_to_numpy(mask), dtype=bool)
    stacked = isinstance(rnn.cell, keras.layers.StackedRNNCells)
    per_cell = initial_state if stacked else [initial_state]
    traces, inputs = {}, sequences
    for k, (cell, states) in enumerate(zip(_cells(rnn), per_cell)):
        states = keras.tree.flatten(states)
        inputs, trace = _trace_cell(cell, inputs, states, mask, rnn.go_backwards)
        if trace is not None:
            traces[f"/cell_{k}" if stacked else ""] = trace
    return traces


def trace_gates(model, x, mask=None):
    """Every gate, cell state and output of every variant layer of ``model`` on the batch ``x``.

    Finds each variant layer anywhere in ``model`` (Sequential, functional or subclassed,
    nested models, both halves of ``Bidirectional``, ``keras.layers.RNN`` over a variant cell
    or over ``StackedRNNCells``, models loaded from ``.keras``) and runs ``model(x)`` once in
    inference mode. Inside each variant layer's call, it steps the layer's cell over the input
    sequence the layer receives, from the layer's initial state (the given ``initial_state``,
    a stateful layer's current state, or zeros), with the cell's own ``gates`` method, and
    holds the state at masked steps exactly as Keras's time loop does.

    Args:
        model: a Keras model (or a single layer) containing at least one variant layer.
        x: the input batch, as ``model(x)`` takes it.
        mask: optional boolean (batch, time): False marks padded steps, for every variant
            layer (whose sequences must then have ``time`` steps). It is combined with the
            masks Keras computes inside the model (``Masking``, ``Embedding(mask_zero=True)``),
            which apply on their own too.

    Returns:
        ``{path: {name: array}}``: for each variant layer (``path`` as in
        :func:`find_variant_layers`, plus ``/cell_<k>`` for each variant cell of a stack and
        ``/call_<n>`` when one layer is called more than once), a float NumPy array
        ``(batch, time, units)`` per gate in the cell's ``gate_names`` order, then ``"c"``
        (the cell state; for a GRU, whose only state is ``h``, the same as ``"h"``) and
        ``"h"`` (the output). The time axis is that of ``x`` for every layer: a backward layer
        (``go_backwards=True``, e.g. ``<name>/backward`` of a ``Bidirectional``) runs from the
        last step to the first, and its value computed at original step ``t`` is stored at
        index ``t``. Masked steps are NaN (and carry the state over, as Keras does).
    """
    layers = check_has_variant_layer(model)
    check_input_shape(model, x)
    mask = check_mask(x, mask)
    with _tracing(layers, mask) as traces:
        model(x, training=False)
    result = {}
    for path, rnn in layers.items():
        calls = traces[id(rnn)]
        for n, call in enumerate(calls):
            prefix = path if len(calls) == 1 else f"{path}/call_{n}"
            for suffix, trace in call.items():
                result[prefix + suffix] = trace
    return result


# ---------------------------------------------------------------------------- statistics
def saturation(values, gate, axis=None):
    """Fractions of the non-NaN ``values`` of ``gate`` that are left / right saturated.

    Karpathy et al. 2015: a sigmoid gate is left-saturated below 0.1 and right-saturated
    above 0.9 (the candidate, a tanh: below -0.9 / above 0.9). ``axis`` as in ``np.mean``.
    """
    low, high = RANGES.get(gate, DEFAULT_RANGE)
    low, high = low + SATURATION_MARGIN, high - SATURATION_MARGIN
    valid = ~np.isnan(values)
    count = valid.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        left = ((values < low) & valid).sum(axis=axis) / count
        right = ((values > high) & valid).sum(axis=axis) / count
    return left, right


# ------------------------------------------------------------------------- images (numpy)
#: Viridis at 9 evenly spaced points (matplotlib's table), interpolated to 256 colours.
_VIRIDIS = np.array(
    [
        [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
        [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
    ],
    dtype=np.float64,
)
COLORMAP = np.stack(
    [np.interp(np.linspace(0, 8, 256), np.arange(9), _VIRIDIS[:, k]) for k in range(3)], axis=1
).astype(np.uint8)
MASKED_COLOR = (160, 160, 160)
DOT_COLOR = (31, 119, 180)


def colorize(values, low, high):
    """``values`` as uint8 RGB: :data:`COLORMAP` from ``low`` to ``high``, NaN grey."""
    scaled = np.clip((np.nan_to_num(values, nan=low) - low) / (high - low), 0.0, 1.0)
    image = COLORMAP[np.round(scaled * 255).astype(int)]
    image[np.isnan(values)] = MASKED_COLOR
    return image


def upscale(image, rows, cols):
    """Nearest-neighbour upscaling: each pixel becomes a ``rows`` x ``cols`` block."""
    return np.repeat(np.repeat(image, rows, axis=0), cols, axis=1)


def heatmap(trace, sequence=0, width=512, band=64):
    """A gate-by-time image of one sequence: a band of ``units`` rows per gate, time across.

    Bands follow the trace's gate order from top to bottom, separated by white lines; each
    colour spans the gate's range (sigmoid 0 → 1, candidate -1 → 1), masked steps are grey.
    """
    gates = [key for key in trace if key not in STATE_KEYS]
    time, units = trace[gates[0]].shape[1:]
    cols, rows = max(1, width // time), max(1, band // units)
    separator = np.full((2, time * cols, 3), 255, np.uint8)
    bands = []
    for gate in gates:
        image = colorize(trace[gate][sequence].T, *RANGES.get(gate, DEFAULT_RANGE))
        bands += [upscale(image, rows, cols), separator]
    return np.concatenate(bands[:-1], axis=0)


def saturation_plot(left, right, size=256, dot=2):
    """Karpathy's scatter on a white square: one dot per unit at (left, right) fractions.

    x grows to the right with the left-saturated fraction, y grows upwards with the
    right-saturated fraction, both from 0 to 1 inside a black border (with a margin of
    ``dot + 2`` pixels, so dots on the edges stay whole); the grey diagonal x + y = 1 bounds
    the triangle every unit lies in (a unit on it is always saturated).
    """
    canvas = np.full((size, size, 3), 255, np.uint8)
    margin = dot + 2
    span = size - 1 - 2 * margin
    diagonal = margin + np.arange(span + 1)
    canvas[diagonal, diagonal] = (200, 200, 200)  # rows grow downwards: this is x + y = 1
    canvas[[0, -1], :] = canvas[:, [0, -1]] = 0
    for x, y in zip(left, right):
        if np.isnan(x) or np.isnan(y):
            continue
        col, row = margin + round(x * span), margin + round((1 - y) * span)
        canvas[row - dot : row + dot + 1, col - dot : col + dot + 1] = DOT_COLOR
    return canvas


# ------------------------------------------------------------------------------ callback
_SCALAR_HELP = {
    "mean": "Mean activation of the gate over all units, probe sequences and unmasked steps.",
    "left_saturated": (
        "Fraction of activations below 0.1 (candidate: below -0.9), over all units, probe "
        "sequences and unmasked steps (Karpathy et al. 2015). A forget gate here erases memory."
    ),
    "right_saturated": (
        "Fraction of activations above 0.9 (candidate: above 0.9), over all units, probe "
        "sequences and unmasked steps (Karpathy et al. 2015). A forget gate here keeps memory: "
        "an integrator."
    ),
}
_HISTOGRAM_HELP = (
    "Distribution of {what} over all units, probe sequences and unmasked steps, per epoch."
)
_STATE_NAMES = {"c": "the cell state c (GRU: h)", "h": "the output h"}
_HEATMAP_HELP = (
    "One probe sequence (index {index}): time runs left to right; one band per gate, top to "
    "bottom in the order {gates}, one row per unit. Colour (viridis) runs from dark purple at "
    "the gate's lower bound (0; candidate -1) to yellow at its upper bound (1). Grey steps are "
    "masked."
)
_SCATTER_HELP = (
    "Karpathy, Johnson & Fei-Fei 2015, fig. 4: one dot per unit. **x** (to the right): fraction "
    "of probe steps where this gate is left-saturated (< 0.1; candidate < -0.9); **y** (upwards): "
    "fraction where it is right-saturated (> 0.9). Both axes run 0 to 1 across the square; the "
    "grey diagonal x + y = 1 is where a unit is always saturated. Top left: almost always open "
    "(a forget gate there keeps long-term memory); bottom right: almost always closed; near "
    "the origin: the gate works in its input-dependent middle range."
)


def _histogram(tag, values, what):
    """Write a histogram of the non-NaN ``values``, described as the distribution of ``what``."""
    finite = values[~np.isnan(values)]
    tf.summary.histogram(tag, finite, description=_HISTOGRAM_HELP.format(what=what))


def _writable_directory(log_dir):
    """Create ``log_dir`` and prove a file can be written in it, or raise naming the argument."""
    if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
        raise ValueError(f"Argument `log_dir` must be a directory path; received {log_dir!r}.")
    log_dir = os.fspath(log_dir)
    probe = os.path.join(log_dir, f".write-test-{uuid.uuid4().hex}")
    try:
        tf.io.gfile.makedirs(log_dir)
        with tf.io.gfile.GFile(probe, "w") as handle:
            handle.write("")
        tf.io.gfile.remove(probe)
    except (OSError, tf.errors.OpError) as error:
        raise ValueError(f"Argument `log_dir` is not writable: {log_dir!r} ({error}).") from None
    return log_dir


class GateStatistics(keras.callbacks.Callback):
    """Log every gate's statistics, histograms and images to TensorBoard while training.

    At the end of every ``every_n_epochs``-th epoch (never inside a training step) it runs
    :func:`trace_gates` on the fixed probe batch ``data`` and writes, to the run
    ``<log_dir>/gates`` (beside ``keras.callbacks.TensorBoard``'s ``train`` and
    ``validation`` runs when both share ``log_dir``), at step = epoch index:

    * scalars ``gates/<layer>/<gate>/mean``, ``.../left_saturated`` (fraction < 0.1) and
      ``.../right_saturated`` (fraction > 0.9) — Karpathy, Johnson & Fei-Fei 2015;
    * histograms ``gates/<layer>/<gate>`` of the activations, and ``gates/<layer>/c`` and
      ``gates/<layer>/h`` of the cell state and output;
    * images ``gates/<layer>/heatmap`` (gate by time, probe sequence ``probe_index``) and
      ``gates/<layer>/<gate>/saturation`` (the per-unit saturation scatter plot).

    ``<layer>`` is a :func:`trace_gates` path, e.g. ``bidirectional/forward``. Masked steps
    (from ``mask`` or the model's own masking) are left out of every statistic.

    Args:
        log_dir: TensorBoard log directory; created, and checked to be writable, at once.
        data: the probe input batch, as ``model(data)`` takes it.
        every_n_epochs: log after epochs ``every_n_epochs``, ``2 * every_n_epochs``, ...
        mask: optional boolean (batch, time) mask of ``data``.
        probe_index: which sequence of ``data`` the heatmaps show.

    >>> callback = GateStatistics("logs", x_val[:32])          # doctest: +SKIP
    >>> model.fit(x, y, epochs=10, callbacks=[callback])         # doctest: +SKIP
    """

    def __init__(self, log_dir, data, every_n_epochs=1, mask=None, probe_index=0):
        super().__init__()
        self.log_dir = _writable_directory(log_dir)
        if (
            isinstance(every_n_epochs, bool)
            or not isinstance(every_n_epochs, numbers.Integral)
            or every_n_epochs < 1
        ):
            raise ValueError(
                "Argument `every_n_epochs` must be a positive integer; "
                f"received every_n_epochs={every_n_epochs!r}."
            )
        arrays = keras.tree.flatten(data)
        if not arrays or len(np.shape(arrays[0])) < 2 or np.shape(arrays[0])[0] == 0:
            raise ValueError(
                "Argument `data` must be a non-empty probe batch (batch, time, ...); received "
                f"shape {np.shape(arrays[0]) if arrays else None}."
            )
        batch = np.shape(arrays[0])[0]
        if isinstance(probe_index, bool) or not isinstance(probe_index, numbers.Integral) or not (
            0 <= probe_index < batch
        ):
            raise ValueError(
                f"Argument `probe_index` must be an integer in [0, {batch}); "
                f"received probe_index={probe_index!r}."
            )
        self.data, self.mask = data, check_mask(data, mask)
        self.every_n_epochs, self.probe_index = int(every_n_epochs), int(probe_index)
        self._writer = None

    def set_model(self, model):
        check_has_variant_layer(model)
        check_input_shape(model, self.data, argument="data")
        super().set_model(model)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs == 0:
            self.write(epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write(self, step):
        """Trace the probe batch and write every summary at ``step``; flush the file."""
        traces = trace_gates(self.model, self.data, self.mask)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "gates"))
        with self._writer.as_default(step=step):
            for layer, trace in traces.items():
                self._write_layer(layer, trace)
        self._writer.flush()

    def _write_layer(self, layer, trace):
        gates = [key for key in trace if key not in STATE_KEYS]
        for gate in gates:
            values = trace[gate]
            tag = f"gates/{layer}/{gate}"
            left, right = saturation(values, gate)
            for name, value in (("mean", np.nanmean(values)), ("left_saturated", left),
                                ("right_saturated", right)):
                tf.summary.scalar(f"{tag}/{name}", value, description=_SCALAR_HELP[name])
            _histogram(tag, values, f"the {gate} gate's activations")
            unit_left, unit_right = saturation(values, gate, axis=(0, 1))
            tf.summary.image(
                f"{tag}/saturation",
                saturation_plot(unit_left, unit_right)[None],
                description=_SCATTER_HELP,
            )
        for state in STATE_KEYS:
            _histogram(f"gates/{layer}/{state}", trace[state], _STATE_NAMES[state])
        tf.summary.image(
            f"gates/{layer}/heatmap",
            heatmap(trace, self.probe_index)[None],
            description=_HEATMAP_HELP.format(index=self.probe_index, gates=", ".join(gates)),
        )


__all__ = ["GateStatistics", "find_variant_layers", "saturation", "trace_gates"]

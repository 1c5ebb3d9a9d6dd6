"""Gate statistics (Karpathy, Johnson & Fei-Fei 2015) and the TensorBoard callback.

Each gate's range comes from its cell: a cell may declare ``gate_ranges = {gate: (low,
high)}`` (``None``: an open bound, e.g. an exponential gate's ``(0, None)``); otherwise the
range follows the activation that makes the gate (``candidate``: the cell's ``activation``;
any other gate: its ``recurrent_activation``): sigmoid (0, 1), tanh (-1, 1), exponential
(0, inf). Saturation is defined for gates with both bounds only: within
:data:`SATURATION_MARGIN` of a bound (a sigmoid gate below 0.1 / above 0.9).

:class:`GateStatistics` writes through ``tf.summary`` (as ``keras.callbacks.TensorBoard``
does), so it imports TensorFlow when constructed; everything else here is NumPy.
"""

import numbers
import os
import uuid

import keras
import numpy as np

from ..cells import GRUCell, LSTMCell
from . import pictures
from .tracing import check_has_variant_layer, check_input_shape, check_mask, trace_layers

SATURATION_MARGIN = 0.1

#: The range of a gate made by each activation (``None``: open).
ACTIVATION_RANGES = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "softsign": (-1.0, 1.0),
    "hard_tanh": (-1.0, 1.0),
    "exponential": (0.0, None),
    "relu": (0.0, None),
    "softplus": (0.0, None),
}

#: What a saturated gate of the LSTM and the GRU means: ``gate: (short left, long left, short
#: right, long right)``. A view of those cells' own ``gate_meanings`` (each cell declares its
#: gates'; :func:`meaning` reads the cell's).
GATE_MEANINGS = {**LSTMCell.gate_meanings, **GRUCell.gate_meanings}


def gate_range(cell, gate):
    """``(low, high)`` of ``gate``'s activations in ``cell`` (``None``: an open bound)."""
    declared = cell.gate_ranges
    if gate in declared:
        low, high = declared[gate]
        return (None if low is None else float(low), None if high is None else float(high))
    attribute = "activation" if gate == "candidate" else "recurrent_activation"
    activation = getattr(cell, attribute, None)
    name = keras.activations.serialize(activation) if activation is not None else None
    return ACTIVATION_RANGES.get(name, (None, None)) if isinstance(name, str) else (None, None)


def thresholds(bounds):
    """Saturation thresholds ``(low, high)`` of a gate with ``bounds``; ``None`` if open."""
    low, high = bounds
    if low is None or high is None:
        return None
    return low + SATURATION_MARGIN, high - SATURATION_MARGIN


def saturation(values, gate=None, axis=None, bounds=None):
    """Fractions of the non-NaN ``values`` that are left / right saturated.

    Karpathy et al. 2015: a sigmoid gate is left-saturated below 0.1 and right-saturated
    above 0.9; in general, within :data:`SATURATION_MARGIN` of the bounds of its range
    (``bounds``; by default (0, 1), or (-1, 1) for ``gate="candidate"``, the tanh of the
    classic cells). ``axis`` as in ``np.mean``.
    """
    if bounds is None:
        bounds = (-1.0, 1.0) if gate == "candidate" else (0.0, 1.0)
    limits = thresholds(bounds)
    if limits is None:
        raise ValueError(f"Gate {gate!r} has an open range {bounds}: saturation is undefined.")
    low, high = limits
    valid = ~np.isnan(values)
    count = valid.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        left = ((values < low) & valid).sum(axis=axis) / count
        right = ((values > high) & valid).sum(axis=axis) / count
    return left, right


def meaning(cell, gate):
    """``(short left, long left, short right, long right)`` for ``gate`` of ``cell``."""
    return tuple(
        cell.gate_meanings.get(
            gate,
            (
                "low",
                f"The {gate} gate is near the bottom of its range here.",
                "high",
                f"The {gate} gate is near the top of its range here.",
            ),
        )
    )


# ------------------------------------------------------------------------- descriptions
def _over(gate):
    return f"of the {gate} gate's activations over all units, probe sequences and unmasked steps"


def describe(cell, gate, statistic):
    """The TensorBoard description (Markdown) of one gate's ``statistic``.

    ``statistic`` is ``"mean"``, ``"left_saturated"``, ``"right_saturated"``, ``"histogram"``
    or ``"saturation"`` (the scatter image).
    """
    bounds = gate_range(cell, gate)
    limits = thresholds(bounds)
    _, left_text, _, right_text = meaning(cell, gate)
    source = "(Karpathy, Johnson & Fei-Fei 2015)"
    if statistic == "mean":
        return f"Mean {_over(gate)}; range {_range(bounds)}."
    if statistic == "histogram":
        return f"Distribution {_over(gate)}, per epoch; range {_range(bounds)}."
    if statistic == "left_saturated":
        return f"Fraction {_over(gate)} below {limits[0]:g} {source}. {left_text}"
    if statistic == "right_saturated":
        return f"Fraction {_over(gate)} above {limits[1]:g} {source}. {right_text}"
    if statistic == "saturation":
        return (
            f"Karpathy, Johnson & Fei-Fei 2015, fig. 4, for the **{gate}** gate: one dot per "
            f"unit (n in the title; units at the same spot make one larger dot, labelled with "
            f"their count). **x**: the fraction of probe steps where the unit's {gate} gate is "
            f"below {limits[0]:g}; **y**: the fraction above {limits[1]:g}. The dashed "
            f"diagonal x + y = 1: a unit on it is always saturated. Top left: {right_text} "
            f"Bottom right: {left_text} Near the origin: the gate works in its "
            "input-dependent middle range."
        )
    raise ValueError(f"Unknown statistic {statistic!r}.")


def _range(bounds):
    low, high = bounds
    return f"({'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'})"


def _describe_state(cell, state):
    names = {"h": "the output h", "c": "the cell state c"}
    return (
        f"Distribution of {names.get(state, f'the state {state!r}')} of {type(cell).__name__} "
        "over all units, probe sequences and unmasked steps, per epoch."
    )


def _describe_heatmap(trace, ranges, sequence):
    gates = ", ".join(f"{gate} {_range(ranges[gate])}" for gate in trace.gate_names)
    return (
        f"Probe sequence {sequence}: one panel per gate (top to bottom: {gates}); time step "
        "left to right, one row per unit. Colour (viridis) runs from dark purple at the gate's "
        "lower bound to yellow at its upper bound, as the colour bar beside each panel shows "
        "(an open bound: the observed values). Hatched grey steps are masked."
    )


# ---------------------------------------------------------------------------- callback
def require_tensorflow(what="GateStatistics"):
    """Import and return TensorFlow, or raise one clear error saying what to install."""
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            f"{what} writes TensorBoard summaries through TensorFlow (tf.summary, as "
            "keras.callbacks.TensorBoard does), and TensorFlow is not installed: "
            "pip install tensorflow (any Keras backend can train the model; klv.trace_gates "
            "needs no TensorFlow)."
        ) from error
    return tf


def _writable_directory(tf, log_dir):
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


def _check_probe(data):
    """Raise naming `data` unless it is a non-empty, finite, numeric probe batch."""
    arrays = keras.tree.flatten(data)
    shapes = [tuple(np.shape(array)) for array in arrays]
    if not arrays or len(shapes[0]) < 2:
        raise ValueError(
            "Argument `data` must be a probe batch shaped (batch, time, ...) (or a structure "
            f"of arrays whose first is); received shapes {shapes or None}."
        )
    for shape, array in zip(shapes, arrays, strict=True):
        if 0 in shape:
            raise ValueError(
                f"Argument `data` must not be empty; received an array of shape {shape}"
                + (" (zero time steps)." if len(shape) > 1 and shape[1] == 0 else ".")
            )
        if len(shape) == 0 or shape[0] != shapes[0][0]:
            raise ValueError(
                f"Argument `data` must hold arrays of one batch size; received shapes {shapes}."
            )
        values = np.asarray(keras.ops.convert_to_numpy(array))
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
            raise ValueError(f"Argument `data` must be numeric; received dtype {values.dtype}.")
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise ValueError(
                f"Argument `data` must be finite; an array of shape {shape} holds "
                f"{np.count_nonzero(~np.isfinite(values))} NaN or infinite values."
            )
    return shapes[0][0]


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"Argument `{name}` must be a positive integer; received {name}={value!r}."
        )
    return int(value)


class GateStatistics(keras.callbacks.Callback):
    """Log every gate's statistics, histograms and pictures to TensorBoard while training.

    At the end of every ``every_n_epochs``-th epoch (never inside a training step) it runs
    :func:`~keras_lstm_variants.trace_gates` on the fixed probe batch ``data`` and writes, to
    the run ``<log_dir>/gates`` (beside ``keras.callbacks.TensorBoard``'s ``train`` and
    ``validation`` runs when both share ``log_dir``), at step = epoch index:

    * scalars ``gates/<layer>/<gate>/mean``, and for a gate with a bounded range
      ``.../left_saturated`` (fraction < 0.1 for a sigmoid gate, < -0.9 for tanh) and
      ``.../right_saturated`` (> 0.9) — Karpathy, Johnson & Fei-Fei 2015;
    * histograms ``gates/<layer>/<gate>`` of the activations, and ``gates/<layer>/<state>``
      of each state the cell has (``c`` for the LSTM family, none for the GRU; ``h``);
    * images ``gates/<layer>/heatmap`` (one panel per gate: units by time step, with a colour
      bar over the gate's range; probe sequence ``probe_index``) and, per bounded gate,
      ``gates/<layer>/<gate>/saturation`` (the per-unit saturation scatter). Drawn with
      matplotlib (the ``gates`` extra); without it, unlabelled NumPy rasters (logged once).

    Every tag carries a description (TensorBoard shows it beside the chart): what the
    statistic is and what a saturated gate of that kind means.

    Args:
        log_dir: TensorBoard log directory; created, and checked to be writable, at once.
        data: the probe input batch, as ``model(data)`` takes it (non-empty, finite).
        every_n_epochs: log after epochs ``every_n_epochs``, ``2 * every_n_epochs``, ...
        mask: optional boolean (batch, time) mask of ``data``.
        probe_index: which sequence of ``data`` the heatmaps show.
        layer_path: the ``<layer>`` part of the tags. ``None``: the layer's path in the model
            (:func:`~keras_lstm_variants.gates.find_variant_layers`, e.g. ``lstm``,
            ``bi/forward``). A string: that name instead of the model's one variant layer
            (its Bidirectional halves and stacked cells keep their suffixes), so runs of
            different models share tags and TensorBoard overlays them, e.g.
            ``layer_path="rnn"`` gives ``gates/rnn/forget/mean`` for every variant. A dict
            ``{path: name}`` renames each given path (and everything under it).

    Raises:
        ImportError: TensorFlow is not installed.

    >>> callback = GateStatistics("logs", x_val[:32])          # doctest: +SKIP
    >>> model.fit(x, y, epochs=10, callbacks=[callback])         # doctest: +SKIP
    """

    def __init__(self, log_dir, data, every_n_epochs=1, mask=None, probe_index=0, layer_path=None):
        super().__init__()
        self._tf = require_tensorflow()
        self.log_dir = _writable_directory(self._tf, log_dir)
        self.every_n_epochs = _check_positive("every_n_epochs", every_n_epochs)
        batch = _check_probe(data)
        if (
            isinstance(probe_index, bool)
            or not isinstance(probe_index, numbers.Integral)
            or not (0 <= probe_index < batch)
        ):
            raise ValueError(
                f"Argument `probe_index` must be an integer in [0, {batch}); "
                f"received probe_index={probe_index!r}."
            )
        self.data, self.mask = data, check_mask(data, mask)
        self.probe_index = int(probe_index)
        if self.mask is not None:
            if self.mask.shape[1] == 0 or not self.mask[self.probe_index].any():
                raise ValueError(
                    f"Argument `mask` masks every step of sequence probe_index="
                    f"{self.probe_index}: its heatmap would show nothing."
                )
        if not (
            layer_path is None
            or (isinstance(layer_path, str) and layer_path.strip("/"))
            or (
                isinstance(layer_path, dict)
                and all(
                    isinstance(k, str) and isinstance(v, str) and v.strip("/")
                    for k, v in layer_path.items()
                )
            )
        ):
            raise ValueError(
                "Argument `layer_path` must be None, a non-empty name, or a dict of layer "
                f"paths to names; received layer_path={layer_path!r}."
            )
        self.layer_path = layer_path
        self._writer = None
        self._figures = {}  # tag -> its matplotlib figure, redrawn at every write

    # ------------------------------------------------------------------ the model
    def set_model(self, model):
        self.tag_paths(check_has_variant_layer(model))
        check_input_shape(model, self.data, argument="data")
        super().set_model(model)

    def tag_paths(self, paths):
        """``{path: tag path}``: the ``<layer>`` part of the tags of each traced ``path``."""
        mapping = self.layer_path
        if isinstance(mapping, str):
            roots = sorted({path.split("/")[0] for path in paths})
            if len(roots) != 1:
                raise ValueError(
                    f"Argument `layer_path={mapping!r}` names one layer, but the model has "
                    f"variant layers under {roots}; pass a dict {{path: name}} instead."
                )
            mapping = {roots[0]: mapping}
        mapping = dict(mapping or {})

        def rename(path):
            parts = path.split("/")
            for k in range(len(parts), 0, -1):
                prefix = "/".join(parts[:k])
                if prefix in mapping:
                    return "/".join([mapping[prefix].strip("/"), *parts[k:]])
            return path

        unknown = [
            key
            for key in mapping
            if not any(path == key or path.startswith(key + "/") for path in paths)
        ]
        if unknown:
            raise ValueError(
                f"Argument `layer_path` renames {unknown}, which the model does not have; its "
                f"variant layers are {sorted(paths)}."
            )
        tags = {path: rename(path) for path in paths}
        if len(set(tags.values())) != len(tags):
            raise ValueError(f"Argument `layer_path` gives two layers one tag path: {tags}.")
        return tags

    # ---------------------------------------------------------------- callbacks
    def on_train_begin(self, logs=None):
        self.tag_paths(trace_layers(self.model, self.data, self.mask))  # fails before training

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs == 0:
            self.write(epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._figures.clear()

    def write(self, step):
        """Trace the probe batch and write every summary at ``step``; flush the file."""
        tf = self._tf
        traces = trace_layers(self.model, self.data, self.mask)
        tag_paths = self.tag_paths(traces)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "gates"))
        with self._writer.as_default(step=step):
            for path, trace in traces.items():
                self._write_layer(tag_paths[path], trace)
        self._writer.flush()

    def _write_layer(self, layer, trace):
        tf, cell = self._tf, trace.cell
        ranges = {gate: gate_range(cell, gate) for gate in trace.gate_names}
        for gate in trace.gate_names:
            values, tag = trace[gate], f"gates/{layer}/{gate}"
            tf.summary.scalar(
                f"{tag}/mean", np.nanmean(values), description=describe(cell, gate, "mean")
            )
            finite = values[~np.isnan(values)]
            tf.summary.histogram(tag, finite, description=describe(cell, gate, "histogram"))
            limits = thresholds(ranges[gate])
            if limits is None:  # an open range (e.g. an exponential gate): no saturation
                continue
            left, right = saturation(values, gate, bounds=ranges[gate])
            for name, value in (("left_saturated", left), ("right_saturated", right)):
                tf.summary.scalar(f"{tag}/{name}", value, description=describe(cell, gate, name))
            unit_left, unit_right = saturation(values, gate, axis=(0, 1), bounds=ranges[gate])
            short_left, _, short_right, _ = meaning(cell, gate)
            image = pictures.saturation_image(
                unit_left,
                unit_right,
                gate,
                limits,
                title=layer,
                corners=(short_left, short_right),
                figures=self._figures.setdefault(f"{tag}/saturation", {}),
            )
            tf.summary.image(
                f"{tag}/saturation", image[None], description=describe(cell, gate, "saturation")
            )
        for state in trace.state_names:
            finite = trace[state][~np.isnan(trace[state])]
            tf.summary.histogram(
                f"gates/{layer}/{state}", finite, description=_describe_state(cell, state)
            )
        gates = {gate: trace[gate] for gate in trace.gate_names}
        image = pictures.heatmap_image(
            gates,
            ranges,
            self.probe_index,
            title=layer,
            figures=self._figures.setdefault(f"gates/{layer}", {}),
        )
        tf.summary.image(
            f"gates/{layer}/heatmap",
            image[None],
            description=_describe_heatmap(trace, ranges, self.probe_index),
        )


__all__ = ["GateStatistics", "describe", "gate_range", "saturation"]

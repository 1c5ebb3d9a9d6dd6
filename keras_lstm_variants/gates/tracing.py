"""Tracing: every gate and state of every variant layer, stepped through the layer's own cell.

:func:`trace_gates` runs the model once in inference mode and, inside each variant layer's
call, takes what Keras hands to the layer's time loop (the input sequence, the initial state
and the mask, seen through the layers' hook :func:`keras_lstm_variants.kernels.observing`)
and steps it one time step at a time through the cell's own
:meth:`~keras_lstm_variants.cells.base.RecurrentCell.gates`, the method the layer's ``call``
uses, so the traced gates are the layer's gates, not a second copy of the equations. Nothing
here assumes a gate set: the gates are whatever ``cell.gates`` returns, the states are the
cell's ``state_names``.

Backend-neutral: ``keras.ops`` and NumPy only (no TensorFlow), so tracing works on the
TensorFlow, JAX and PyTorch backends.
"""

import contextlib
import logging
import threading

import keras
import numpy as np

from .. import kernels
from .._compat import in_symbolic_scope
from ..cells.base import RecurrentCell
from ..layers import VariantRNN

logger = logging.getLogger("keras_lstm_variants")
_WARNED = set()


class LayerTrace(dict):
    """One traced cell: ``{name: (batch, time, width) array}``, gates first, then states.

    A ``dict`` (what :func:`trace_gates` returns) that also remembers the ``cell`` it came
    from and which of its keys are ``gate_names`` (in the order the cell reports them) and
    which are ``state_names`` (the cell's states other than ``h``, in its order, then ``h``).
    """

    def __init__(self, cell, gates, states):
        super().__init__({**gates, **states})
        self.cell = cell
        self.gate_names = tuple(gates)
        self.state_names = tuple(states)


# --------------------------------------------------------------------------- finding layers
def _cells(rnn):
    """The cells an RNN layer steps through: the stack's cells, or its one cell."""
    cell = rnn.cell
    return list(cell.cells) if isinstance(cell, keras.layers.StackedRNNCells) else [cell]


def _has_variant_cell(layer):
    return isinstance(layer, keras.layers.RNN) and any(
        isinstance(cell, RecurrentCell) for cell in _cells(layer)
    )


def _walk(layer, path, wrapped=None):
    """Yield ``(path, rnn, wrapper)``: ``wrapper`` is the enclosing ``TimeDistributed`` or None."""
    if isinstance(layer, keras.layers.Bidirectional):
        yield from _walk(layer.forward_layer, f"{path}/forward", wrapped)
        yield from _walk(layer.backward_layer, f"{path}/backward", wrapped)
    elif isinstance(layer, keras.layers.TimeDistributed):
        yield from _walk(layer.layer, f"{path}/{layer.layer.name}", wrapped or layer)
    elif _has_variant_cell(layer):
        yield path, layer, wrapped
    elif isinstance(layer, keras.Model):
        for sub in layer.layers:
            yield from _walk(sub, f"{path}/{sub.name}", wrapped)


def _find(model):
    """``({path: rnn}, {path: time_distributed})``: traceable layers and wrapped ones."""
    roots = model.layers if isinstance(model, keras.Model) else [model]
    found, wrapped, seen = {}, {}, []
    for root in roots:
        for path, rnn, wrapper in _walk(root, root.name):
            if any(rnn is other for other in seen):
                continue
            seen.append(rnn)
            if wrapper is None:
                found[path] = rnn
            else:
                wrapped[path] = wrapper
    return found, wrapped


def find_variant_layers(model):
    """``{path: rnn_layer}`` for every ``keras.layers.RNN`` in ``model`` that steps a variant cell.

    Paths are layer names joined by ``/`` through nested models; the two halves of a
    ``Bidirectional`` are ``<name>/forward`` and ``<name>/backward``. Layers inside
    ``TimeDistributed`` are not included (see :func:`check_has_variant_layer`).
    """
    return _find(model)[0]


def check_has_variant_layer(model, argument="model"):
    """Return :func:`find_variant_layers` of ``model``; raise naming ``argument`` if empty.

    A variant layer inside ``TimeDistributed`` cannot be traced (``TimeDistributed`` calls it
    once per outer step, or inside ``vectorized_map`` when the outer axis has no fixed
    length): alone, it is an error that says how to trace it; beside traceable layers, it is
    left out with a warning naming it (once per model).
    """
    found, wrapped = _find(model)
    if wrapped:
        how = "; ".join(
            f"{path!r} (inside TimeDistributed {wrapper.name!r})"
            for path, wrapper in wrapped.items()
        )
        advice = (
            "Gate tracing does not support variant layers inside TimeDistributed, which calls "
            "the layer once per outer step. Trace the inner layer itself on the input reshaped "
            "to (batch * outer_steps, time, features): "
            "klv.trace_gates(time_distributed.layer, x.reshape((-1,) + x.shape[2:]))."
        )
        if not found:
            raise ValueError(f"Argument `{argument}` has variant layers only in {how}. {advice}")
        if (id(model), how) not in _WARNED:  # once per model, not at every epoch
            _WARNED.add((id(model), how))
            logger.warning("Gate tracing leaves out %s. %s", how, advice)
    if not found:
        raise ValueError(
            f"Argument `{argument}` contains no variant layer: gate inspection needs a "
            "keras_lstm_variants sequence layer (LSTM, GRU, ...), or a keras.layers.RNN over "
            "one of their cells (possibly inside Bidirectional or a nested model); "
            f"{getattr(model, 'name', model)!r} has none."
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
    for array, spec in zip(arrays, specs, strict=True):
        shape, expected = tuple(np.shape(array)), tuple(spec.shape)
        if len(shape) != len(expected) or any(
            e is not None and s != e for s, e in zip(shape, expected, strict=True)
        ):
            raise ValueError(
                f"Argument `{argument}` must have shape {expected} (None: any size) to feed "
                f"model {model.name!r}; received shape {shape}."
            )


def check_mask(x, mask, argument="mask"):
    """``mask`` as a boolean (batch, time) array matching ``x``'s batch (``None`` stays)."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != bool and not (
        np.issubdtype(mask.dtype, np.number) and np.isin(mask, (0, 1)).all()
    ):
        raise ValueError(
            f"Argument `{argument}` must be boolean (or 0/1); received dtype {mask.dtype}."
        )
    mask = mask.astype(bool)
    batch = np.shape(keras.tree.flatten(x)[0])[0]
    if mask.ndim != 2 or mask.shape[0] != batch:
        raise ValueError(
            f"Argument `{argument}` must have shape (batch={batch}, time); received shape "
            f"{mask.shape}."
        )
    return mask


# ------------------------------------------------------------------------------- tracing
@contextlib.contextmanager
def _tracing(layers, extra_mask=None):
    """Trace every time loop each RNN layer runs: ``{id(layer): [traces of each call]}``.

    Observes each layer's time loop through the layers' documented hook,
    :func:`keras_lstm_variants.kernels.observing` (a context variable: tracing in one thread
    leaves the others' calls alone), where ``keras.layers.RNN.call`` hands over the input, the
    resolved initial state and the mask, and traces the cells right there, inside the layer's
    call, under its dtype policy (mixed precision reads the weights as float16 there).
    Symbolic passes (``keras.SymbolicScope``: building an unbuilt model) are not traced.
    ``extra_mask`` (batch, time) is combined with the mask Keras passes (logical and) and used
    by the layer itself too, so later layers see what Keras computes under that mask. Stateful
    layers get their state back afterwards: tracing leaves the model as it found it.
    """
    traces = {id(rnn): [] for rnn in layers.values()}
    paths = {id(rnn): path for path, rnn in layers.items()}
    saved = [
        (variable, keras.ops.convert_to_numpy(variable))
        for rnn in layers.values()
        if rnn.stateful and getattr(rnn, "states", None) is not None
        for variable in keras.tree.flatten(rnn.states)
    ]

    def observer(rnn, call):
        if id(rnn) not in traces:  # another model's layer, called inside this one
            return None
        mask = call.mask
        if extra_mask is not None:
            if call.sequences.shape[1] != extra_mask.shape[1]:
                raise ValueError(
                    f"Argument `mask` has {extra_mask.shape[1]} time steps but layer "
                    f"{paths[id(rnn)]!r} receives sequences of {call.sequences.shape[1]} steps."
                )
            extra = keras.ops.convert_to_tensor(extra_mask)  # torch's loop takes no NumPy
            mask = extra if mask is None else keras.ops.logical_and(mask, extra)
        if not in_symbolic_scope():  # not the placeholder pass that builds a model
            traces[id(rnn)].append(_trace_rnn(rnn, call.sequences, call.initial_state, mask))
        return call.replace(mask=mask)

    for rnn in layers.values():
        if not isinstance(rnn, VariantRNN):
            _observable(rnn)
    try:
        with kernels.observing(observer):
            yield traces
    finally:
        for variable, value in saved:
            variable.assign(value)


_ADAPTING = threading.Lock()


def _observable(rnn):
    """Route a ``keras.layers.RNN`` that is not one of this package's layers (e.g.
    ``keras.layers.RNN(klv.LSTMCell(8))``) through the same observers: once per layer, its
    ``inner_loop`` (the class's, or one the user set) is wrapped by one that calls
    :func:`keras_lstm_variants.kernels.observe` first; with no observer active it only passes
    the call on. Never removed, so concurrent tracing needs no restore."""
    with _ADAPTING:
        if getattr(vars(rnn).get("inner_loop"), "observed", False):
            return
        original = rnn.inner_loop

        def inner_loop(sequences, initial_state, mask, training=False):
            call = kernels.record(rnn, sequences, initial_state, mask, training)
            call = kernels.observe(rnn, call)
            return original(call.sequences, call.initial_state, call.mask, training=training)

        inner_loop.observed = True
        rnn.inner_loop = inner_loop


def _numpy(tensor):
    array = keras.ops.convert_to_numpy(tensor)
    return array.astype(np.float32) if array.dtype.itemsize < 4 else array


def _trace_cell(cell, inputs, states, mask, go_backwards):
    """Step ``cell`` over ``inputs`` (batch, time, features) as ``keras.layers.RNN`` does.

    Steps run in reverse when ``go_backwards``, but every array is stored at its step's
    position on the original time axis. Where ``mask`` (batch, time) is False the state is
    carried over unchanged (Keras's rule) and the traced values are NaN. Returns
    ``(outputs, trace)``: the per-step outputs (the next stacked cell's input) and, for a
    variant cell, a :class:`LayerTrace` (else ``None``).
    """
    time = inputs.shape[1]
    variant = isinstance(cell, RecurrentCell)
    gate_steps, state_steps, outputs = {}, {}, {}
    for t in reversed(range(time)) if go_backwards else range(time):
        if variant:
            gates, new_states = cell.gates(inputs[:, t], states, training=False)
            gate_steps[t] = gates
            state_steps[t] = dict(zip(cell.state_names, new_states, strict=True))
            outputs[t] = new_states[0]
        else:  # a stock cell in a stack: stepped for its output, not traced
            outputs[t], new_states = cell(inputs[:, t], states)
            new_states = keras.tree.flatten(new_states)
        if mask is not None:
            keep = mask[:, t : t + 1]
            new_states = [
                keras.ops.where(keep, n, s) for n, s in zip(new_states, states, strict=True)
            ]
        states = list(new_states)
    output_sequence = keras.ops.stack([outputs[t] for t in range(time)], axis=1)
    if not variant:
        return output_sequence, None

    def stacked(steps, key):
        array = np.stack([_numpy(steps[t][key]) for t in range(time)], axis=1)
        if mask is not None:
            array[~mask] = np.nan
        return array

    state_order = [name for name in cell.state_names if name != "h"] + ["h"]
    gates = {key: stacked(gate_steps, key) for key in gate_steps[0]}
    states = {key: stacked(state_steps, key) for key in state_order}
    return output_sequence, LayerTrace(cell, gates, states)


def _trace_rnn(rnn, sequences, initial_state, mask):
    """``{suffix: trace}`` of one call of ``rnn``; suffix ``/cell_<k>`` in a stack."""
    mask = None if mask is None else np.asarray(keras.ops.convert_to_numpy(mask), dtype=bool)
    stacked = isinstance(rnn.cell, keras.layers.StackedRNNCells)
    per_cell = initial_state if stacked else [initial_state]
    traces, inputs = {}, sequences
    for k, (cell, states) in enumerate(zip(_cells(rnn), per_cell, strict=True)):
        states = keras.tree.flatten(states)
        inputs, trace = _trace_cell(cell, inputs, states, mask, rnn.go_backwards)
        if trace is not None:
            traces[f"/cell_{k}" if stacked else ""] = trace
    return traces


def trace_layers(model, x, mask=None):
    """:func:`trace_gates` with each value a :class:`LayerTrace` (which knows its cell)."""
    layers = check_has_variant_layer(model)
    check_input_shape(model, x)
    mask = check_mask(x, mask)
    with _tracing(layers, mask) as traces:
        model(x, training=False)
    result = {}
    for path, rnn in layers.items():
        calls = traces[id(rnn)]
        if not calls:
            raise ValueError(
                f"Layer {path!r} of argument `model` did not run on `x`: model(x) does not "
                "call it (or calls it only inside a compiled function), so it has no gates "
                "to trace."
            )
        for n, call in enumerate(calls):
            prefix = path if len(calls) == 1 else f"{path}/call_{n}"
            for suffix, trace in call.items():
                result[prefix + suffix] = trace
    return result


def trace_gates(model, x, mask=None):
    """Every gate and state of every variant layer of ``model`` on the batch ``x``.

    Finds each variant layer anywhere in ``model`` (Sequential, functional or subclassed,
    nested models, both halves of ``Bidirectional``, ``keras.layers.RNN`` over a variant cell
    or over ``StackedRNNCells``, models loaded from ``.keras``) and runs ``model(x)`` once in
    inference mode. Inside each variant layer's call, it steps the layer's cell over the input
    sequence the layer receives, from the layer's initial state (the given ``initial_state``,
    a stateful layer's current state, or zeros), with the cell's own ``gates`` method, and
    holds the state at masked steps exactly as Keras's time loop does. Works on every Keras
    backend.

    Args:
        model: a Keras model (or a single layer) containing at least one variant layer.
            Variant layers inside ``TimeDistributed`` are not traced (trace
            ``time_distributed.layer`` itself on the reshaped input).
        x: the input batch, as ``model(x)`` takes it.
        mask: optional boolean (batch, time): False marks padded steps, for every variant
            layer (whose sequences must then have ``time`` steps). It is combined with the
            masks Keras computes inside the model (``Masking``, ``Embedding(mask_zero=True)``),
            which apply on their own too.

    Returns:
        ``{path: {name: array}}``: for each variant layer (``path`` as in
        :func:`find_variant_layers`, plus ``/cell_<k>`` for each variant cell of a stack and
        ``/call_<n>`` when one layer is called more than once), a float NumPy array
        ``(batch, time, width)`` per gate the cell reports (its ``gate_names``, e.g. ``input,
        forget, candidate, output`` for the LSTM, ``update, reset, candidate`` for the GRU),
        then per state: the cell's ``state_names`` other than ``h`` (``"c"`` for the LSTM
        family; none for the GRU, which has no cell state), then ``"h"`` (the output). The
        time axis is that of ``x`` for every layer: a backward layer (``go_backwards=True``,
        e.g. ``<name>/backward`` of a ``Bidirectional``) runs from the last step to the first,
        and its value computed at original step ``t`` is stored at index ``t``. Masked steps
        are NaN (and carry the state over, as Keras does).

    >>> import numpy as np, keras, keras_lstm_variants as klv
    >>> model = keras.Sequential([keras.Input((5, 3)), klv.GRU(4, name="gru")])
    >>> trace = klv.trace_gates(model, np.ones((2, 5, 3)))["gru"]
    >>> list(trace), trace["update"].shape
    (['update', 'reset', 'candidate', 'h'], (2, 5, 4))
    """
    return {path: dict(trace) for path, trace in trace_layers(model, x, mask).items()}


__all__ = ["LayerTrace", "check_has_variant_layer", "find_variant_layers", "trace_gates"]

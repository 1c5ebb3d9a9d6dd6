"""ONNX export: ONNX's own ``LSTM`` / ``GRU`` operators where a layer maps onto them exactly, a
``Scan`` over the cell's step everywhere else; a file ONNX Runtime and OpenVINO both run.

The model is read as a chain of layers (as for streaming). Each recurrent layer (ours, the
stock ``keras.layers.LSTM`` / ``GRU``, any ``keras.layers.RNN`` over a cell, and their
``Bidirectional`` wrappers) is written here; every run of other layers between them (``Dense``,
``Dropout``, normalization, activations, ``Embedding``, ...) is converted by ``tf2onnx`` from
the layers themselves and joined in. No ONNX ``Loop`` and no sequence (tensor-list) op is
emitted: OpenVINO's converter rejects the ``Loop`` that Keras's own ``model.export(format=
"onnx")`` writes for a recurrent layer.

Native operators (ONNX's gate order is i, o, f, c for ``LSTM`` and z, r, h for ``GRU``):

* ``LSTM`` -- the vanilla LSTM; the peephole LSTM (``P`` in i, o, f order, zeros for gates
  without one; i and f read c_{t-1}, o reads c_t, as ours); CIFG with ``input_forget=1``:
  ONNX Runtime computes i from the i block and sets f = 1 - i, so our forget block goes in
  negated (sigma(-z) = 1 - sigma(z)), its peephole too. The bias goes in ``Wb``, zeros in
  ``Rb``.
* ``GRU`` -- both reset modes: ``linear_before_reset=1`` is Keras's ``reset_after=True``
  (bias row 0 in ``Wb``, row 1 in ``Rb``).

A layer maps when its cell declares :data:`~keras_lstm_variants.cells.base.ONNX_LSTM` /
``ONNX_GRU`` (or is Keras's own ``LSTMCell`` / ``GRUCell``) and its instance options are the
operator's: tanh and sigmoid activations, no ``layer_norm``, ``proj_units``, ``cell_clip``
(ONNX's ``clip`` clips gate pre-activations, not the cell state) or ``zoneout``. OpenVINO
(2026.4) silently ignores ``P`` and ``input_forget``, so for ``target="any"`` (the default)
peephole and CIFG layers are written as ``Scan`` loops; ``target="onnxruntime"`` writes them as
the native operator, which only ONNX Runtime computes right.

Behind a mask (``Embedding(mask_zero=True)``, ``Masking``) the mask is computed in the graph
and every recurrent layer runs as the loop, which keeps the states and repeats the last output
at a masked step, as Keras does (the operator's ``sequence_lens`` is right for right-padding
only).
"""

import numbers

import keras
import numpy as np

from ._common import _check_path, _input_spec, _tensorflow, cell_loop
from .streaming import _chain, _makes_mask

#: ``target`` values: the runtimes a file must run right in.
TARGETS = ("any", "onnxruntime")
#: The ONNX opset written (``LSTM``/``GRU`` 14, ``Scan`` 16).
OPSET = 17


def export_onnx(model, path, *, native=None, target="any", opset=OPSET):
    """Write ``model`` as an ONNX file at ``path`` and return ``path``.

    The graph takes ``inputs`` shaped as the model's input (batch and time free unless the
    model's ``Input`` fixes them) and returns ``output``. Serve it with ONNX Runtime::

        import onnxruntime
        session = onnxruntime.InferenceSession("model.onnx")
        (y,) = session.run(None, {"inputs": x})

    or OpenVINO (ask for float32: its CPU plugin defaults to a reduced precision on CPUs
    that have one)::

        import openvino
        compiled = openvino.Core().compile_model(
            "model.onnx", "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        )
        y = compiled(x)[0]

    Args:
        model: a built Keras model that is one chain of layers (a ``Sequential``, or a
            functional model each of whose layers feeds the next), one input
            ``(batch, time, ...)``.
        path: the ``.onnx`` file to write; its parent must exist.
        native: ``None`` (default) writes ONNX's ``LSTM``/``GRU`` operator for every
            recurrent layer that maps onto it exactly (see the module docstring) and a
            ``Scan`` loop for the others; ``True`` requires the operator for every recurrent
            layer (a ``ValueError`` names the layer and why one cannot); ``False`` writes loops
            only.
        target: ``"any"`` -- a file that ONNX Runtime and OpenVINO both run right;
            ``"onnxruntime"`` -- also peephole and CIFG layers as the native operator, which
            OpenVINO computes wrongly (it ignores ``P`` and ``input_forget``).
        opset: the ONNX opset (at least 16, for ``Scan``'s axes).

    Raises:
        ValueError: bad arguments; a model that is not a chain, has a ``stateful`` or a
            ``return_state`` layer, or computes in another dtype than float32;
            ``native=True`` for a layer that does not map (behind a mask included).
        ImportError: ``onnx`` or ``tf2onnx`` is missing (one line saying what to install).
        TypeError, RuntimeError: as :func:`export_saved_model`.
    """
    path = _check_path(path, directory=False)
    if native not in (None, True, False):
        raise ValueError(f"Argument `native` must be None, True or False; received {native!r}.")
    if target not in TARGETS:
        raise ValueError(f"Argument `target` must be one of {TARGETS}; received {target!r}.")
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) or opset < 16:
        raise ValueError(f"Argument `opset` must be an integer >= 16; received {opset!r}.")
    tf = _tensorflow("export_onnx")
    onnx, tf2onnx = _onnx_packages()
    spec = _input_spec(tf, model)
    layers = _chain(model)
    for layer in layers:
        if layer.compute_dtype != "float32":
            raise ValueError(
                f"Cannot export layer '{layer.name}', which computes in {layer.compute_dtype}: "
                "export_onnx writes float32. Build a float32 copy (after "
                "`keras.mixed_precision.set_global_policy('float32')`), `set_weights` from "
                "this model, and export the copy."
            )
    plans = _plan(layers, native, target)
    with cell_loop():
        graph = _Graph(onnx, tf, tf2onnx, int(opset))
        name = graph.input("inputs", spec)
        shape, mask = tuple(spec.shape), None
        segment = []
        for layer, plan in zip(layers, plans, strict=True):
            if plan is None:
                segment.append(layer)
                continue
            if segment:
                name, shape, mask = graph.layers(segment, name, shape, mask)
                segment = []
            name, shape = graph.recurrent(layer, plan, name, shape, mask)
            mask = mask if layer.return_sequences else None
        if segment:
            name, shape, mask = graph.layers(segment, name, shape, mask)
        proto = graph.model(name, shape)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


def native_problem(layer, target="any"):
    """Why recurrent ``layer`` cannot be ONNX's ``LSTM``/``GRU`` operator, or ``None``."""
    from ..cells.base import ONNX_GRU, ONNX_LSTM

    if isinstance(layer, keras.layers.Bidirectional):
        if layer.merge_mode is None:
            return "a Bidirectional layer with merge_mode=None returns two tensors"
        return native_problem(layer.forward_layer, target) or native_problem(
            layer.backward_layer, target
        )
    cell = layer.cell
    if isinstance(cell, keras.layers.StackedRNNCells):
        return "its cell is a StackedRNNCells (one operator per cell; use one layer per cell)"
    capabilities = getattr(cell, "capabilities", frozenset())
    stock = type(cell) in (keras.layers.LSTMCell, keras.layers.GRUCell)
    if not stock and not capabilities & {ONNX_LSTM, ONNX_GRU}:
        return f"{type(cell).__name__} has no ONNX operator (its equations are not LSTM's or GRU's)"
    for option, off, why in (
        ("layer_norm", False, ""),
        ("proj_units", None, ""),
        ("cell_clip", None, " (its `clip` clips gate pre-activations, not the cell state)"),
    ):
        if getattr(cell, option, off) != off:
            return f"{option}={getattr(cell, option)!r} is not expressible in ONNX's operator{why}"
    zoneout = np.atleast_1d(getattr(cell, "zoneout", 0.0))
    if np.any(zoneout != 0.0):
        return f"zoneout={cell.zoneout!r} (its expectation at inference) does not map"
    for name, expected in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        function = getattr(cell, name)
        if getattr(function, "__name__", None) != expected:
            return f"{name}={getattr(function, '__name__', function)!r} is not {expected}"
    peepholes = tuple(getattr(cell, "peepholes", ()))
    cifg = tuple(getattr(cell, "blocks", ())) == ("forget", "candidate", "output")
    if target == "any" and (peepholes or cifg):
        what = "coupled gates (input_forget)" if cifg else "peepholes (P)"
        return (
            f"OpenVINO ignores ONNX's {what}; pass target='onnxruntime' for a file only ONNX "
            "Runtime computes right"
        )
    return None


# ----------------------------------------------------------------------------- planning
def _is_recurrent(layer):
    return isinstance(layer, keras.layers.RNN) or (
        isinstance(layer, keras.layers.Bidirectional)
        and isinstance(layer.forward_layer, keras.layers.RNN)
    )


def _plan(layers, native, target):
    """Per layer: ``None`` (converted by tf2onnx), ``"native"`` or ``"loop"``."""
    plans, masked = [], False
    for layer in layers:
        if not _is_recurrent(layer):
            if isinstance(layer, keras.layers.Bidirectional):
                raise ValueError(f"Cannot export layer '{layer.name}': it wraps no RNN layer.")
            masked = masked or _makes_mask(layer)
            plans.append(None)
            continue
        if getattr(layer, "return_state", False):
            raise ValueError(
                f"Cannot export layer '{layer.name}' with return_state=True: the ONNX graph "
                "returns the model's one output."
            )
        problem = None if native is False else native_problem(layer, target)
        if masked and not problem:
            problem = (
                "it runs behind a mask (Embedding(mask_zero=True) or Masking), which the loop "
                "applies step by step (ONNX's sequence_lens would hold for right-padding only)"
            )
        if native is True and problem:
            raise ValueError(
                f"Cannot write layer '{layer.name}' as ONNX's native operator (native=True): "
                f"{problem}."
            )
        if isinstance(layer, keras.layers.Bidirectional) and layer.merge_mode is None:
            raise ValueError(
                f"Cannot export layer '{layer.name}': merge_mode=None returns two tensors."
            )
        plans.append("loop" if native is False or problem else "native")
        masked = masked and layer.return_sequences
    return plans


def _onnx_packages():
    try:
        import onnx
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            f"export_onnx needs the `{error.name}` package: `pip install onnx tf2onnx` "
            "(or `pip install keras-lstm-variants[deploy]`)."
        ) from error
    try:  # tf2onnx (1.17) still reads NumPy 1 names; Keras patches them for its own export
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()
    except ImportError:
        pass
    return onnx, tf2onnx


from ._onnx_graph import _Graph  # noqa: E402  (the graph builder, below the public functions)

__all__ = ["OPSET", "TARGETS", "export_onnx", "native_problem"]

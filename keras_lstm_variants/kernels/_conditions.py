"""The conditions several kernels share, each returning ``None`` or the reason in a few words."""

from keras import activations, backend


def on_backend(name):
    """Not on Keras's ``name`` backend."""
    current = backend.backend()
    return None if current == name else f"the backend is {current}, not {name}"


def declares(cell, capability):
    """The cell's class does not declare ``capability`` (``RecurrentCell.capabilities``)."""
    if capability in getattr(cell, "capabilities", frozenset()):
        return None
    return f"{type(cell).__name__} does not declare {capability!r}"


def first(*reasons):
    """The first reason that is not ``None`` (each may be a callable, called in turn)."""
    for reason in reasons:
        reason = reason() if callable(reason) else reason
        if reason is not None:
            return reason
    return None


def zoneout(cell):
    """Zoneout is applied after ``transition`` (in ``gates``): a kernel of ``transition``
    alone does not apply it."""
    return "zoneout is on" if any(getattr(cell, "zoneout_rates", {}).values()) else None


def dropout_in_training(cell, training):
    if training and (cell.dropout or cell.recurrent_dropout):
        return "dropout in training"
    return None


def steps_transition(layer, call):
    """What the kernels that step ``transition(project(x))`` themselves need: a cell that
    declares a row-wise ``project`` (``separable-input``), no zoneout, no dropout in
    training, no ``unroll``."""
    cell = layer.cell
    return first(
        declares(cell, "separable-input"),
        zoneout(cell),
        dropout_in_training(cell, call.training),
        "unroll=True" if call.unroll else None,
    )


def lstm_options(cell):
    """An option no fused kernel computes: layer norm, a projection, clipping of the cell
    state."""
    for option in ("layer_norm", "proj_units", "cell_clip"):
        if getattr(cell, option, None):
            return f"{option} is on"
    return None


def kernel_arithmetic(cell):
    """The fused kernels (PyTorch's, TensorFlow's ``BlockLSTMV2``) compute the stock
    activations, in one dtype for weights and computation."""
    if cell.activation is not activations.tanh:
        return "activation is not tanh"
    if cell.recurrent_activation is not activations.sigmoid:
        return "recurrent_activation is not sigmoid"
    return mixed_precision(cell)


def mixed_precision(cell):
    if cell.compute_dtype != cell.variable_dtype:
        return f"mixed precision ({cell.compute_dtype} over {cell.variable_dtype} weights)"
    return None


def known_steps(call):
    return "the number of steps is unknown" if call.sequences.shape[1] is None else None


def no_mask(call):
    return "a mask is given" if call.mask is not None else None


def overrides_after(cell, method):
    """The cell's class overrides ``transition`` below the class that defines ``method`` (a
    whole-sequence form written for the step it inherits): that form no longer matches."""
    owner = _owner(type(cell), method)
    if owner is None:
        return f"{type(cell).__name__} has no {method}()"
    step = _owner(type(cell), "transition")
    if step is not None and not issubclass(owner, step):
        return f"{type(cell).__name__} overrides transition() without {method}()"
    return None


def _owner(klass, name):
    return next((k for k in klass.__mro__ if name in k.__dict__), None)

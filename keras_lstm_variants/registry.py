"""The variants, declared once: one record per variant, read by the package and the commands.

A record names the variant (the short, stable name the commands and specs use), its cell and
sequence layer classes, and the stock Keras layer it is compared with (``"LSTM"`` or ``"GRU"``,
``keras.layers``' class of that name). ``klv.VARIANTS``, the commands (``compare``, ``bench``,
specs), the gate statistics and the tests read this table; nothing else lists the variants.

Adding a variant to the package: its cell file, one :func:`add` line below, its oracle in
tests/reference.py and its docs (CONTRIBUTING.md, "Adding a variant").
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One variant: ``name``, ``cell`` class, ``layer`` class, ``stock`` Keras layer name."""

    name: str
    cell: type
    layer: type
    stock: str = "LSTM"


_VARIANTS = {}


def add(name, cell, layer=None, stock="LSTM"):
    """Register a variant (a user's own too); returns its :class:`Variant` record.

    ``layer``: its sequence layer class; ``None`` builds one
    (:func:`~keras_lstm_variants.layers.sequence_layer`: ``cell``'s name less ``Cell``,
    registered for ``.keras`` under ``cell``'s package). ``stock``: the Keras layer whose
    positional order the layer takes and that the commands compare it with.
    """
    from .cells import RecurrentCell
    from .layers import VariantRNN, sequence_layer

    if not isinstance(cell, type) or not issubclass(cell, RecurrentCell):
        raise ValueError(f"Argument `cell` must be a RecurrentCell subclass; received {cell!r}.")
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"Argument `name` must be a lower-case identifier; received {name!r}.")
    if name in _VARIANTS and _VARIANTS[name].cell is not cell:
        raise ValueError(f"A variant named {name!r} is already registered ({_VARIANTS[name]}).")
    if stock not in ("LSTM", "GRU"):
        raise ValueError(f"Argument `stock` must be 'LSTM' or 'GRU'; received {stock!r}.")
    if layer is None:
        known = _VARIANTS.get(name)
        layer = known.layer if known and known.cell is cell else sequence_layer(cell)
    if (
        not isinstance(layer, type)
        or not issubclass(layer, VariantRNN)
        or layer.cell_class is not cell
    ):
        raise ValueError(
            f"Argument `layer` must be a VariantRNN subclass whose cell_class is {cell.__name__}; "
            f"received {layer!r}."
        )
    record = Variant(name, cell, layer, stock)
    _VARIANTS[name] = record
    if "_positional" in layer.__dict__:
        del layer._positional  # the layer binds positional arguments by the stock given here
    return record


def remove(name):
    """Unregister the variant ``name`` (e.g. a test's own); returns its record."""
    get(name)
    return _VARIANTS.pop(name)


def get(name):
    """The :class:`Variant` named ``name``; raise ``ValueError`` listing the names."""
    try:
        return _VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown variant {name!r}; choose from {', '.join(_VARIANTS)}.") from None


def names():
    """The registered variants' names, in registration order."""
    return tuple(_VARIANTS)


def records():
    """The registered :class:`Variant` records, in registration order."""
    return tuple(_VARIANTS.values())


def _register_package_variants():
    from . import cells, layers

    add("lstm", cells.LSTMCell, layers.LSTM)
    add("peephole", cells.PeepholeLSTMCell, layers.PeepholeLSTM)
    add("cifg", cells.CIFGLSTMCell, layers.CIFGLSTM)
    add("gru", cells.GRUCell, layers.GRU, stock="GRU")
    add("greff", cells.GreffLSTMCell, layers.GreffLSTM)  # variant="V"; see GREFF_VARIANTS
    add("slstm", cells.SLSTMCell, layers.SLSTM)  # xLSTM (Beck et al. 2024)
    add("mlstm", cells.MLSTMCell, layers.MLSTM)  # xLSTM; trains in the parallel form
    add("mingru", cells.MinGRUCell, layers.MinGRU, stock="GRU")  # Feng et al. 2024
    add("minlstm", cells.MinLSTMCell, layers.MinLSTM)  # Feng et al. 2024


_register_package_variants()

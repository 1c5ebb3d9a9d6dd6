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


def add(name, cell, layer, stock="LSTM"):
    """Register a variant (a user's own too); returns its :class:`Variant` record."""
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"Argument `name` must be a lower-case identifier; received {name!r}.")
    if name in _VARIANTS and _VARIANTS[name].cell is not cell:
        raise ValueError(f"A variant named {name!r} is already registered ({_VARIANTS[name]}).")
    if stock not in ("LSTM", "GRU"):
        raise ValueError(f"Argument `stock` must be 'LSTM' or 'GRU'; received {stock!r}.")
    record = Variant(name, cell, layer, stock)
    _VARIANTS[name] = record
    return record


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

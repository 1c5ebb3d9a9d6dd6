"""Variant specs: one readable string names a layer and its options, for the commands.

A spec is ``name[:variant][+option[=value]]...``:

* ``lstm``, ``gru``, ``peephole`` ...: a key of :data:`keras_lstm_variants.VARIANTS`;
* ``greff:NIG``: a layer with a ``variant`` argument (the text after ``:``);
* ``lstm+layer_norm``: a boolean option switched on;
* ``lstm+proj_units=64+cell_clip=10``: options with values (int, float, ``true``/``false``,
  or ``a/b`` for a tuple, e.g. ``zoneout=0.1/0.05``).

>>> from keras_lstm_variants.commands.specs import parse_spec
>>> parse_spec("greff:NIG+layer_norm")
('greff', {'variant': 'NIG', 'layer_norm': True})
>>> parse_spec("lstm+proj_units=64+zoneout=0.1/0.05")
('lstm', {'proj_units': 64, 'zoneout': (0.1, 0.05)})
"""


def _value(text):
    if "/" in text:
        return tuple(_value(part) for part in text.split("/"))
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_spec(spec):
    """``(variant name, layer keyword arguments)`` of ``spec``; raise ValueError naming it."""
    from .. import VARIANTS

    text = spec.strip() if isinstance(spec, str) else ""
    head, *options = text.split("+")
    name, _, variant = head.partition(":")
    name = name.strip().lower()
    if name not in VARIANTS:
        raise ValueError(
            f"Unknown variant {name!r} in spec {spec!r}; choose from {', '.join(VARIANTS)}."
        )
    kwargs = {"variant": variant.strip()} if variant.strip() else {}
    for option in options:
        key, has_value, value = option.partition("=")
        key = key.strip()
        if not key.isidentifier():
            raise ValueError(f"Spec {spec!r}: option {option!r} is not `name` or `name=value`.")
        kwargs[key] = _value(value.strip()) if has_value else True
    return name, kwargs


def build_layer(spec, units, **layer_kwargs):
    """The sequence layer that ``spec`` names, with ``units`` and extra ``layer_kwargs``."""
    from .. import VARIANTS

    name, kwargs = parse_spec(spec)
    return VARIANTS[name][1](units, **kwargs, **layer_kwargs)


def check_specs(specs, units):
    """Build each of ``specs`` once, tiny in every dimension but ``units`` (the units the run
    will use: an option such as ``num_heads`` must divide them), so that a bad name or option
    fails before any long work; raise ValueError naming the spec and the units."""
    for spec in specs:
        for count in sorted(set([units] if isinstance(units, int) else units)):
            try:
                build_layer(spec, count)
            except (ValueError, TypeError) as error:
                raise ValueError(f"{spec!r} at {count} units: {error}") from None

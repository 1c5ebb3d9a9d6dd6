"""Options production systems use, shared by the LSTM family and, where it makes sense, the GRU.

Each option is written once here and applied at the point of the equations where its paper
puts it, by the hooks of :class:`~keras_lstm_variants.cells.lstm.LSTMCell`
(``preactivations``, ``cell_update``, ``hidden``) and by :class:`~.gru.GRUCell`; zoneout, a
rule on the carried state, is applied by :meth:`~.base.RecurrentCell.gates` after the step.
Every option is off by default, and off adds no op and no weight.

* ``layer_norm`` -- Ba, Kiros & Hinton 2016, "Layer Normalization":
  :math:`\\mathrm{LN}(z) = \\gamma \\odot (z - \\mu(z)) / \\sqrt{\\sigma^2(z) + \\epsilon} + \\beta`
  over the last axis, one LN (own gain and bias) per fused product.
* ``proj_units``, ``proj_clip`` -- Sak, Senior & Beaufays 2014 (LSTMP).
* ``cell_clip`` -- TensorFlow's ``LSTMBlockCell`` ``cell_clip``.
* ``zoneout`` -- Krueger et al. 2017, "Zoneout".
"""

import numbers

import keras
from keras import ops

#: The options of the LSTM family, as constructor arguments.
LSTM_OPTIONS = ("layer_norm", "norm_epsilon", "proj_units", "proj_clip", "cell_clip", "zoneout")
#: The subset the GRU takes; the others raise naming the argument.
GRU_OPTIONS = ("layer_norm", "norm_epsilon", "zoneout")
#: The arguments of the recurrent weights and the squashing activations: what a cell without
#: recurrent weights (the minimal cells, the mLSTM) refuses.
RECURRENT_ARGUMENTS = (
    "activation",
    "recurrent_activation",
    "recurrent_initializer",
    "recurrent_regularizer",
    "recurrent_constraint",
    "recurrent_dropout",
)
DEFAULT_EPSILON = 1e-3


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_flag(name, value):
    """Return ``value`` as a bool if it is one (Python or NumPy), else raise naming it."""
    if type(value).__name__ not in ("bool", "bool_"):
        raise ValueError(f"Argument `{name}` must be True or False; received {name}={value!r}.")
    return bool(value)


def check_positive(name, value, integer=False):
    """``None`` (off), or ``value`` as a positive int (``integer``) / float; else raise."""
    if value is None:
        return None
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise ValueError(f"Argument `{name}` must be {what} or None; received {name}={value!r}.")
    return int(value) if integer else float(value)


def check_epsilon(norm_epsilon, layer_norm):
    """``norm_epsilon`` as a positive float; a non-default value needs ``layer_norm``."""
    epsilon = check_positive("norm_epsilon", norm_epsilon)
    if epsilon is None:
        raise ValueError("Argument `norm_epsilon` must be a positive number; received None.")
    if epsilon != DEFAULT_EPSILON and not layer_norm:
        raise ValueError(
            f"Argument `norm_epsilon` applies only with layer_norm=True; received "
            f"norm_epsilon={norm_epsilon!r} with layer_norm=False."
        )
    return epsilon


def check_zoneout(zoneout, state_names):
    """One zoneout probability per state in ``state_names`` (a float sets all), in [0, 1).

    Returns a tuple in ``state_names`` order.
    """
    count = len(state_names)
    rates = zoneout if isinstance(zoneout, (list, tuple)) else (zoneout,) * count
    message = (
        "Argument `zoneout` must be a probability in [0, 1)"
        + (f" or a pair ({', '.join(f'z_{s}' for s in state_names)}) of them" if count > 1 else "")
        + f"; received zoneout={zoneout!r}."
    )
    if len(rates) != count or not all(_is_real(r) and 0.0 <= r < 1.0 for r in rates):
        raise ValueError(message)
    return tuple(float(r) for r in rates)


def add_norm(cell, prefix, width):
    """Create ``{prefix}_norm_gamma`` (ones) and ``{prefix}_norm_beta`` (zeros) of ``(width,)``."""
    gamma = cell.add_weight(shape=(width,), name=f"{prefix}_norm_gamma", initializer="ones")
    beta = cell.add_weight(shape=(width,), name=f"{prefix}_norm_beta", initializer="zeros")
    return gamma, beta


def layer_normalize(z, gamma, beta, epsilon):
    """Ba et al.'s LN over the last axis of ``z`` (statistics in float32 under mixed precision)."""
    dtype = z.dtype
    if keras.backend.standardize_dtype(dtype) in ("float16", "bfloat16"):
        z = ops.cast(z, "float32")
    mean, variance = ops.moments(z, axes=[-1], keepdims=True)
    normalized = ops.cast((z - mean) * ops.rsqrt(variance + epsilon), dtype)
    return normalized * gamma + beta


def clip(value, bound):
    """``value`` clipped to ``[-bound, bound]``; ``bound=None`` is no op."""
    if bound is None:
        return value
    return ops.clip(value, -bound, bound)


def zone_out(new, previous, rate, training, cell, keep=None):
    """Krueger et al.'s zoneout of one state: each unit keeps ``previous`` with probability
    ``rate``.

    Training: ``d * previous + (1 - d) * new`` with ``d ~ Bernoulli(rate)`` a fresh mask at
    every step: ``keep`` (bool, drawn for the whole sequence by the layer) or, without it,
    drawn here from ``cell.seed_generator``. Inference: the expectation,
    ``rate * previous + (1 - rate) * new``.
    """
    if rate == 0.0:
        return new
    if not training:
        return ops.add(rate * previous, (1.0 - rate) * new)  # `previous` may be NumPy
    if keep is None:
        if keras.backend.backend() == "jax":
            # JAX's scan traces the step once: a mask drawn here would repeat at every step.
            raise ValueError(
                f"{type(cell).__name__}: training with `zoneout` on the JAX backend needs "
                "this package's sequence layers (e.g. klv.LSTM), which draw a mask per step "
                "before the loop; keras.layers.RNN(cell) would reuse one mask at every step."
            )
        keep = keras.random.uniform(ops.shape(new), seed=cell.seed_generator) < rate
    return ops.where(keep, previous, new)

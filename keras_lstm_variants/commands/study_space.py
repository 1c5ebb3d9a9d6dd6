"""The hyperparameter space of ``keras-lstm-variants study``: Greff et al.'s random search.

Greff, Srivastava, Koutník, Steunebrink & Schmidhuber 2017, "LSTM: A Search Space Odyssey",
section IV, drew every trial's hyperparameters independently at random:

* learning rate ``η``: log-uniform on [1e-6, 1e-2], for stochastic gradient descent with
  Nesterov-style momentum;
* momentum ``μ = 1 - m`` with ``m`` log-uniform on [0.01, 1] (so μ in [0, 0.99], most draws near
  its upper end);
* hidden size (LSTM blocks per layer): log-uniform on [20, 200];
* standard deviation of Gaussian noise added to the (standardized) inputs while training:
  uniform on [0, 1].

Here, by default (:data:`DEFAULT_SPACE`):

* **Adam instead of SGD with momentum** (``optimizer="adam"``), learning rate log-uniform on
  [1e-4, 1e-1], no momentum draw. Greff et al. trained each trial for up to hundreds of epochs
  of per-sequence updates (10^5 and more); a study trial here gets a few hundred to a few
  thousand updates. In that budget SGD at the lower half of Greff's range (1e-6 to 1e-4) does
  not leave the trivial predictor, so most trials would measure nothing; Adam normalizes each
  parameter's step, its learning rate is about the step size, and the package's ``compare``
  (Adam, 0.01) solves the adding problem within the budget. The range spans three decades
  around that value. ``optimizer="sgd"`` restores Greff's optimizer, learning rate range and
  momentum draw exactly (:data:`GREFF_SGD`).
* Hidden size log-uniform on [10, 100] (Greff's decade, halved, for a CPU); ``units=(20, 200)``
  gives theirs.
* Input noise: ``input_noise`` uniform on [0, 1], in units of each input channel's standard
  deviation. Greff's inputs were standardized, so their noise std was in these units too;
  the trial multiplies by the task's per-channel input std (:func:`noise_scale`).
* Batch size: drawn from (8, 16, 32, 64), each equally likely (log-uniform over powers of
  two). Greff et al. did not search it; it sets how many sequences a fixed number of training
  steps sees, so it is drawn rather than fixed.

Draw ``i`` depends only on the space, the study's ``seed`` and ``i`` (a generator seeded with
``[seed, i]``): asking for more trials keeps the first ones, and every variant of a study
trains from the same ``N`` draws (and the same per-draw training seed).

>>> from keras_lstm_variants.commands.study_space import draws
>>> first = draws(3, seed=0)
>>> [sorted(draw) for draw in first][0]
['batch_size', 'input_noise', 'learning_rate', 'momentum', 'optimizer', 'seed', 'trial', 'units']
>>> draws(5, seed=0)[:3] == first              # more trials keep the first ones
True
>>> all(1e-4 <= d["learning_rate"] <= 1e-1 and 10 <= d["units"] <= 100 for d in first)
True
"""

import dataclasses
import math
import numbers

import numpy as np

OPTIMIZERS = ("adam", "sgd")
#: Largest seed a draw may carry (a NumPy/Keras seed).
MAX_SEED = 2**32 - 1


def _log_uniform(rng, low, high):
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _check_range(name, value, lowest, highest, positive=False):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"Argument `{name}` must be a (low, high) pair; received {value!r}."
        ) from None
    ok = lowest <= low <= high <= highest and (low > 0 or not positive)
    if not ok:
        bound = f"in ({lowest}, {highest}]" if positive else f"in [{lowest}, {highest}]"
        raise ValueError(
            f"Argument `{name}` must be a (low, high) pair with low <= high, {bound}; "
            f"received {value!r}."
        )


@dataclasses.dataclass(frozen=True)
class Space:
    """The ranges of a random search; see the module docstring.

    Attributes:
        optimizer: ``"adam"`` or ``"sgd"`` (SGD with Nesterov momentum, as Greff et al.).
        learning_rate: ``(low, high)``, log-uniform.
        units: ``(low, high)``, log-uniform, rounded to an integer.
        input_noise: ``(low, high)``, uniform; in units of the input channels' std.
        batch_sizes: the batch sizes, drawn with equal probability.
        momentum: ``(low, high)`` of ``m`` (momentum ``1 - m``), log-uniform; SGD only.
    """

    optimizer: str = "adam"
    learning_rate: tuple = (1e-4, 1e-1)
    units: tuple = (10, 100)
    input_noise: tuple = (0.0, 1.0)
    batch_sizes: tuple = (8, 16, 32, 64)
    momentum: tuple = (0.01, 1.0)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"Argument `optimizer` must be one of {', '.join(OPTIMIZERS)}; "
                f"received {self.optimizer!r}."
            )
        _check_range("learning_rate", self.learning_rate, 0, 1, positive=True)
        _check_range("units", self.units, 1, 100_000, positive=True)
        _check_range("input_noise", self.input_noise, 0, math.inf)
        _check_range("momentum", self.momentum, 0, 1, positive=True)
        sizes = tuple(self.batch_sizes)
        if not sizes or any(
            isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1 for b in sizes
        ):
            raise ValueError(
                f"Argument `batch_sizes` must be positive integers; received {self.batch_sizes!r}."
            )
        object.__setattr__(self, "batch_sizes", tuple(sorted({int(b) for b in sizes})))

    def parameters(self):
        """The searched hyperparameters: ``{name: (kind, low, high, log)}`` with kind
        ``"float"``, ``"int"`` or ``"choice"`` (then ``low`` is the tuple of choices). Only
        parameters that vary are listed (a range with ``low == high`` is a constant)."""
        found = {
            "learning_rate": ("float", *self.learning_rate, True),
            "units": ("int", round(self.units[0]), round(self.units[1]), True),
            "input_noise": ("float", *self.input_noise, False),
            "batch_size": ("choice", self.batch_sizes, None, False),
        }
        if self.optimizer == "sgd":
            found["momentum"] = ("float", 1 - self.momentum[1], 1 - self.momentum[0], False)
        return {
            name: spec
            for name, spec in found.items()
            if (len(spec[1]) > 1 if spec[0] == "choice" else spec[1] < spec[2])
        }

    def draw(self, index, seed=0):
        """Draw ``index`` of the study seeded ``seed`` (a dict, see :func:`draws`)."""
        rng = np.random.default_rng([seed, index])
        learning_rate = _log_uniform(rng, *self.learning_rate)
        units = round(_log_uniform(rng, *self.units))
        input_noise = float(rng.uniform(*self.input_noise))
        batch_size = int(self.batch_sizes[rng.integers(len(self.batch_sizes))])
        m = _log_uniform(rng, *self.momentum)  # drawn for both, so the other draws agree
        return {
            "trial": int(index),
            "seed": int(rng.integers(MAX_SEED)),
            "optimizer": self.optimizer,
            "learning_rate": learning_rate,
            "units": units,
            "input_noise": input_noise,
            "batch_size": batch_size,
            "momentum": 1 - m if self.optimizer == "sgd" else None,
        }


#: The default search (Adam; see the module docstring for why).
DEFAULT_SPACE = Space()
#: Greff et al.'s optimizer and ranges: SGD with Nesterov momentum, η in [1e-6, 1e-2],
#: momentum 1 - log-uniform[0.01, 1], hidden size [20, 200], input noise [0, 1].
GREFF_SGD = Space(optimizer="sgd", learning_rate=(1e-6, 1e-2), units=(20, 200))


def draws(count, seed=0, space=DEFAULT_SPACE):
    """The first ``count`` hyperparameter draws of a study seeded ``seed``.

    Each draw is a dict: ``trial`` (its index), ``seed`` (the training seed of that trial, the
    same for every variant), ``optimizer``, ``learning_rate``, ``units``, ``input_noise``,
    ``batch_size`` and ``momentum`` (``None`` with Adam). Draw ``i`` is a function of
    ``(space, seed, i)`` only.
    """
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
        raise ValueError(f"Argument `count` must be an integer >= 1; received {count!r}.")
    if (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed <= MAX_SEED
    ):
        raise ValueError(
            f"Argument `seed` must be an integer from 0 to {MAX_SEED}; received {seed!r}."
        )
    return [space.draw(index, seed) for index in range(count)]


def noise_scale(x):
    """Per-channel standard deviation of inputs ``x`` ``(batch, time, channels)``: the unit
    of ``input_noise`` (a channel that never varies gets 0, so no noise)."""
    return np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1]).std(axis=0)

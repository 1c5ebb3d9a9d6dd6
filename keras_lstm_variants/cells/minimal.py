r"""minGRU and minLSTM: gates that read only the input, so the recurrence is a linear scan.

Feng, Tung, Ahmed, Bengio & Hajimirsadegh 2024, "Were RNNs All We Needed?"
(arXiv:2410.01201; official code: https://github.com/BorealisAI/minRNNs). Dropping
:math:`h_{t-1}` from the gates and the candidate leaves a recurrence of the form

.. math::

    h_t = a_t \odot h_{t-1} + b_t

whose coefficients :math:`a_t, b_t` depend on :math:`x_t` alone: every step's coefficients come
from one matrix product over the whole sequence, and the recurrence runs as a scan over the
whole sequence (:func:`scan_recurrence`) instead of a loop of :math:`T` dependent steps.

Each cell states its equations once, in :meth:`MinimalCell.coefficients` (the gates and
:math:`a_t, b_t` of one step, for projections of any leading shape). Its ``transition``
(``h = a * h_prev + b``) is the sequential step that ``keras.layers.RNN(cell)``,
``Bidirectional``, gate tracing, streaming export and TFLite run; the sequence layers
(:class:`~keras_lstm_variants.layers.MinGRU`, :class:`~keras_lstm_variants.layers.MinLSTM`)
compute the coefficients of all steps at once and scan them. tests/test_minimal.py proves the
two paths equal (outputs, final state, gradients) and both equal to NumPy transcriptions of the
paper's sequential and parallel (log-space) code (tests/reference.py).

``log_space``: the paper's code runs the scan in log space, through the closed form
:math:`\log h_t = a^*_t + \mathrm{logcumsumexp}(\log b - a^*)_t` with
:math:`a^*_t = \sum_{k \le t} \log a_k` (Heinsen 2023), because that closed form divides by
:math:`\prod a_k`, which underflows; for the logs to exist it makes the candidate positive,
:math:`\tilde h_t = g(W_h x_t + b_h)`, and takes :math:`\log h_0`. Here ``log_space=True``
(the default, as in the paper's code) is that model: the candidate :math:`g(\cdot)`, and with
it :math:`h_t > 0` whenever :math:`h_0 \ge 0`. The scan itself needs no logs: it composes the
steps' affine maps and never divides, so it is exact in linear space, and :math:`h_0` may be
any value (zeros, the Keras default, have no log). It is also more precise: in float32 the
closed form loses about :math:`|a^*_t| \cdot 2^{-24}` (relative) at step :math:`t`, and
:math:`|a^*_t|` grows linearly in :math:`t` (docs/minimal.md measures it).
``log_space=False`` is the paper's plain form: the linear candidate
:math:`\tilde h_t = W_h x_t + b_h`.
"""

import math
from typing import ClassVar

from keras import ops

from .base import RecurrentCell, register
from .options import LSTM_OPTIONS, RECURRENT_ARGUMENTS, check_flag


def g(x):
    r""":math:`g(x) = x + \tfrac12` for :math:`x \ge 0`, else :math:`\sigma(x)`: positive and
    continuous (the paper's map that keeps the log-space candidate defined)."""
    return ops.where(x >= 0, x + 0.5, ops.sigmoid(x))


def scan_recurrence(a, b, h_0, mask=None):
    r"""All :math:`h_t = a_t \odot h_{t-1} + b_t` for ``t = 1..T`` at once; returns ``(B, T, U)``.

    ``a``, ``b``: ``(batch, time, units)`` with a known number of steps; ``h_0``:
    ``(batch, units)``; ``mask``: optional ``(batch, time)`` booleans, False keeps the state
    (:math:`a_t = 1, b_t = 0`). The gradient is the adjoint recurrence, itself a scan run
    backwards (:func:`_linear_scan`).
    """
    if mask is not None:
        keep = ops.expand_dims(ops.cast(mask, "bool"), -1)
        a = ops.where(keep, a, ops.ones_like(a))
        b = ops.where(keep, b, ops.zeros_like(b))
    return _linear_scan(a, b, h_0)


@ops.custom_gradient
def _linear_scan(a, b, h_0):
    r"""``h`` of :func:`_scan`, with the adjoint gradient.

    For :math:`h_t = a_t h_{t-1} + b_t` and upstream :math:`\bar h_t = \partial L / \partial
    h_t`, the total derivative :math:`\lambda_t` obeys :math:`\lambda_t = \bar h_t + a_{t+1}
    \lambda_{t+1}` (a scan backwards in time), and :math:`\partial L/\partial b_t = \lambda_t`,
    :math:`\partial L/\partial a_t = \lambda_t h_{t-1}`, :math:`\partial L/\partial h_0 = a_1
    \lambda_1`. Differentiating through the scan's graph instead measured slower (every
    reshape and slice of the forward pass gets its own gradient op; docs/minimal.md).
    """
    h = _scan(a, b, h_0)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        a_next = ops.concatenate([a[:, 1:], ops.zeros_like(a[:, :1])], axis=1)
        lam = ops.flip(
            _scan(ops.flip(a_next, axis=1), ops.flip(upstream, axis=1), ops.zeros_like(h_0)),
            axis=1,
        )
        h_prev = ops.concatenate([ops.expand_dims(h_0, 1), h[:, :-1]], axis=1)
        return lam * h_prev, lam, a[:, 0] * lam[:, 0]

    return h, grad


def _scan(a, b, h_0):
    r""":math:`h_t = a_t h_{t-1} + b_t` by chunks: :math:`O(T)` work in :math:`O(\sqrt T)` steps.

    The ``T`` steps are cut into about :math:`\sqrt T` chunks of :math:`C \approx \sqrt T`
    steps (the last padded with :math:`a = 1, b = 0`). (1) Within the chunks, all chunks at
    once, :math:`C` steps compose the affine maps: :math:`A_j = A_{j-1} a_j`,
    :math:`B_j = a_j B_{j-1} + b_j` from :math:`(1, 0)`. (2) Across the chunks, each chunk's
    start state follows from the previous one's by its total :math:`(A_C, B_C)`. (3) Every
    step at once: :math:`h = A_j h_{\text{start}} + B_j`. Each step of (1) and (2) is one
    elementwise op on ``(batch, chunks, units)`` (or ``(batch, units)``).

    Why not ``keras.ops.associative_scan`` (Blelloch's :math:`O(\log T)` depth)? On
    TensorFlow it wraps every level in ``tf.cond``, and both it and a static odd-even scan
    written with reshapes measured slower than these chunks, whose ops are few and contiguous
    (figures: docs/minimal.md).
    """
    time = a.shape[1]
    chunk = max(1, math.ceil(math.sqrt(time)))
    count = -(-time // chunk)
    pad = count * chunk - time
    if pad:
        a = ops.concatenate([a, ops.ones_like(a[:, :pad])], axis=1)
        b = ops.concatenate([b, ops.zeros_like(b[:, :pad])], axis=1)
    shape = (-1, count, chunk, *a.shape[2:])
    a_steps = ops.unstack(ops.reshape(a, shape), axis=2)
    b_steps = ops.unstack(ops.reshape(b, shape), axis=2)
    a_within, b_within = [a_steps[0]], [b_steps[0]]
    for a_j, b_j in zip(a_steps[1:], b_steps[1:], strict=True):
        a_within.append(a_within[-1] * a_j)
        b_within.append(a_j * b_within[-1] + b_j)
    a_total = ops.unstack(a_within[-1], axis=1)
    b_total = ops.unstack(b_within[-1], axis=1)
    starts = [h_0]
    for a_c, b_c in zip(a_total[:-1], b_total[:-1], strict=True):
        starts.append(a_c * starts[-1] + b_c)
    h_start = ops.expand_dims(ops.stack(starts, axis=1), 2)
    h = ops.stack(a_within, axis=2) * h_start + ops.stack(b_within, axis=2)
    return ops.reshape(h, (-1, count * chunk, *a.shape[2:]))[:, :time]


class MinimalCell(RecurrentCell):
    """Base of :class:`MinGRUCell` and :class:`MinLSTMCell`; not used directly.

    Weights: ``kernel`` ``(input_dim, len(blocks) * units)`` and ``bias``
    ``(len(blocks) * units,)``; there is no recurrent kernel. Arguments that only make sense
    with a recurrent product or a nonlinearity the paper does not have (``recurrent_dropout``,
    ``recurrent_initializer`` ..., ``activation``, ``peepholes``) raise an error naming them.
    """

    state_names = ("h",)
    #: Arguments of the other cells that a minimal cell has nothing to apply to.
    refused_arguments: ClassVar[dict] = dict.fromkeys(
        (
            *RECURRENT_ARGUMENTS,
            "unit_forget_bias",
            "peepholes",
            "peephole_initializer",
            "peephole_regularizer",
            "peephole_constraint",
            "reset_after",
            *LSTM_OPTIONS,
        ),
        "its gates and candidate read only the input x_t, so there is no recurrent "
        "product, recurrent kernel or nonlinearity for it to set",
    )
    #: ``log_space`` decides the candidate: g(W_h x + b_h) or W_h x + b_h.
    layout_keys = ("log_space",)

    def __init__(
        self,
        units,
        log_space=True,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        seed=None,
        **kwargs,
    ):
        log_space = check_flag("log_space", log_space)
        super().__init__(
            units,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            seed=seed,
            **kwargs,
        )
        self.log_space = log_space

    recurrent_kernel_shape = None  # no recurrent kernel

    def project(self, inputs, training=False):
        """``W x + b`` of one step ``(batch, features)`` or of a whole sequence
        ``(batch, time, features)`` in one product, input dropout applied (the same mask at
        every step)."""
        self.check_features(inputs.shape)
        if training and self.dropout > 0:
            sequence = len(inputs.shape) == 3
            mask = self.get_dropout_mask(inputs[:, 0] if sequence else inputs)
            inputs = inputs * (ops.expand_dims(mask, 1) if sequence else mask)
        z = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            z = z + self.bias
        return z

    def candidate(self, z_h):
        r"""The candidate :math:`\tilde h_t`: :math:`g(W_h x_t + b_h)` with ``log_space``, else
        :math:`W_h x_t + b_h`."""
        return g(z_h) if self.log_space else z_h

    def coefficients(self, z_x):
        """The equations of one step: ``(gates, a, b)`` with ``h_t = a * h_{t-1} + b``, from
        the input projection ``z_x`` of one step or of a whole sequence (any leading shape)."""
        raise NotImplementedError

    def transition(self, z_x, states, training=False):
        (h_prev,) = states
        gates, a, b = self.coefficients(z_x)
        return gates, [a * h_prev + b]

    def get_config(self):
        return {**super().get_config(), "log_space": self.log_space}


@register
class MinGRUCell(MinimalCell):
    r"""minGRU: a GRU whose update gate and candidate read only the input.

    Feng et al. 2024, "Were RNNs All We Needed?" (arXiv:2410.01201, Sections 3.1 and B; code:
    BorealisAI/minRNNs):

    .. math::

        z_t &= \sigma(W_z x_t + b_z) \\
        \tilde h_t &= W_h x_t + b_h \qquad
            (\text{``log_space=True``: } \tilde h_t = g(W_h x_t + b_h)) \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    with :math:`g(x) = x + \tfrac12` for :math:`x \ge 0` and :math:`\sigma(x)` otherwise (the
    paper's log-space form: :math:`\tilde h_t > 0`, so the scan can run on logs). Note the
    paper's convention: :math:`z_t` weights the *new* candidate (``keras.layers.GRU``'s
    :math:`z` weights the old state).

    Weights: ``kernel`` ``(input_dim, 2 * units)`` with column blocks z, h; ``bias``
    ``(2 * units,)``. :meth:`transition` reports the gate ``update`` (:math:`z_t`).

    Args:
        units: size of :math:`h`.
        log_space: the paper's log-space form (default, as in its code); False: the plain
            linear candidate and a linear scan.
        use_bias, kernel_*/bias_* initializer/regularizer/constraint, dropout (on the input),
        seed: as ``keras.layers.GRUCell``.

    >>> import keras, keras_lstm_variants as klv
    >>> tuple(keras.layers.RNN(klv.MinGRUCell(8))(keras.random.normal((2, 5, 3))).shape)
    (2, 8)
    """

    blocks = ("update", "candidate")
    gate_names = ("update",)
    gate_ranges: ClassVar[dict] = {"update": (0.0, 1.0)}
    #: For gate statistics: the paper's z weights the *new* candidate (the reverse of GRU's).
    gate_meanings: ClassVar[dict] = {
        "update": (
            "keeps h",
            "z ~ 0: minGRU keeps its previous state (h_t = (1 - z) h_{t-1} + z h~_t): an "
            "integrator, long-term memory.",
            "replaces h",
            "z ~ 1: minGRU replaces its state by this step's candidate: no memory.",
        ),
    }

    def coefficients(self, z_x):
        k_z, k_h = ops.split(z_x, 2, axis=-1)
        z = ops.sigmoid(k_z)
        h_tilde = self.candidate(k_h)
        # h = (1 - z) * h_prev + z * h_tilde; 1 - z as sigmoid(-k_z), exact where z -> 1
        return {"update": z}, ops.sigmoid(-k_z), z * h_tilde


@register
class MinLSTMCell(MinimalCell):
    r"""minLSTM: an LSTM whose gates and candidate read only the input, gates normalized.

    Feng et al. 2024, "Were RNNs All We Needed?" (arXiv:2410.01201, Sections 3.2 and B; code:
    BorealisAI/minRNNs):

    .. math::

        f_t &= \sigma(W_f x_t + b_f) \\
        i_t &= \sigma(W_i x_t + b_i) \\
        \tilde h_t &= W_h x_t + b_h \qquad
            (\text{``log_space=True``: } \tilde h_t = g(W_h x_t + b_h)) \\
        f'_t &= \frac{f_t}{f_t + i_t}, \qquad i'_t = \frac{i_t}{f_t + i_t} \\
        h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t

    with :math:`g` as in :class:`MinGRUCell`. The normalized gates are computed as
    :math:`f'_t = \sigma(\log f_t - \log i_t)`, :math:`i'_t = \sigma(\log i_t - \log f_t)`,
    the same numbers (as in the paper's log-space code), finite even where both :math:`f_t`
    and :math:`i_t` underflow to 0.

    Weights: ``kernel`` ``(input_dim, 3 * units)`` with column blocks i, f, h (the order of
    ``keras.layers.LSTMCell``'s i, f, c); ``bias`` ``(3 * units,)``. :meth:`transition`
    reports ``forget`` and ``input``: the *normalized* gates :math:`f'_t` and :math:`i'_t`
    (which sum to 1), the ones that act on the state.

    Args: as :class:`MinGRUCell`.

    >>> import keras, keras_lstm_variants as klv
    >>> tuple(keras.layers.RNN(klv.MinLSTMCell(8))(keras.random.normal((2, 5, 3))).shape)
    (2, 8)
    """

    blocks = ("input", "forget", "candidate")
    gate_names = ("forget", "input")
    gate_ranges: ClassVar[dict] = {"forget": (0.0, 1.0), "input": (0.0, 1.0)}
    #: For gate statistics: the normalized gates, f' + i' = 1.
    gate_meanings: ClassVar[dict] = {
        "forget": (
            "state replaced",
            "f' ~ 0: minLSTM replaces its state by this step's candidate (i' = 1 - f' ~ 1).",
            "state kept",
            "f' ~ 1: minLSTM keeps its previous state (i' ~ 0): an integrator.",
        ),
        "input": (
            "input ignored",
            "i' ~ 0: this step's candidate barely enters; the state is kept (f' ~ 1).",
            "input written",
            "i' ~ 1: this step's candidate replaces the state (f' ~ 0).",
        ),
    }

    def coefficients(self, z_x):
        k_i, k_f, k_h = ops.split(z_x, 3, axis=-1)
        log_f = -ops.softplus(-k_f)  # f = sigmoid(k_f)
        log_i = -ops.softplus(-k_i)  # i = sigmoid(k_i)
        f_prime = ops.sigmoid(log_f - log_i)  # f / (f + i)
        i_prime = ops.sigmoid(log_i - log_f)  # i / (f + i)
        h_tilde = self.candidate(k_h)
        # h = f' * h_prev + i' * h_tilde
        return {"forget": f_prime, "input": i_prime}, f_prime, i_prime * h_tilde


__all__ = ["MinGRUCell", "MinLSTMCell", "MinimalCell", "g", "scan_recurrence"]

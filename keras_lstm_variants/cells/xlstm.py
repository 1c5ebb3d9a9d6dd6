"""xLSTM's two cells: the sLSTM (scalar memory, exponential gating) and the mLSTM (matrix memory).

Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter & Hochreiter 2024,
"xLSTM: Extended Long Short-Term Memory" (NeurIPS 2024, arXiv 2405.04517), sections 2.2-2.3
and appendix A.

Both cells gate the memory with an exponential input gate :math:`\\exp(\\tilde\\imath_t)` and keep,
beside the memory, a normalizer ``n`` and a stabilizer ``m`` (a running maximum of the log
gates). The stored ``c``/``C`` and ``n`` are the paper's quantities scaled by
:math:`e^{-m_t}`; the output is the same with or without that scaling, and the scaled gates

.. math::

    m_t = \\max(\\log f_t + m_{t-1}, \\tilde\\imath_t), \\quad
    i'_t = \\exp(\\tilde\\imath_t - m_t), \\quad
    f'_t = \\exp(\\log f_t + m_{t-1} - m_t)

never exceed 1, so nothing overflows however large the pre-activations grow. ``i'`` and ``f'``
are what :meth:`transition` (hence ``trace_gates``) reports as ``input`` and ``forget``: at
every step one of them is exactly 1, and ``i' / f'`` is how much the step's write outweighs the
decayed memory.

Under a mixed-precision policy the gate, stabilizer and memory arithmetic runs in float32: every
input of it is cast to :attr:`~_ExponentialGating.arithmetic_dtype`, decided from the cell's
compute dtype (never from a tensor's ``dtype`` attribute, which differs between backends and
which a stateful layer's state variables report as the compute dtype while holding float32).
The states are stored in the compute dtype between steps, as ``keras.layers.RNN`` requires.
"""

import math
import numbers
from typing import ClassVar

from keras import backend, ops

from .base import RecurrentCell, register
from .lstm import LSTMCell
from .options import LSTM_OPTIONS, RECURRENT_ARGUMENTS

#: How the forget gate is computed from its pre-activation: ``log f`` of each choice.
FORGET_ACTIVATIONS = ("sigmoid", "exp")

#: Compute dtypes whose gate arithmetic runs in float32.
_LOW_PRECISION = ("float16", "bfloat16")


def check_num_heads(num_heads, units):
    """Return ``num_heads`` as an int dividing ``units``, or raise naming the argument."""
    if (
        isinstance(num_heads, bool)
        or not isinstance(num_heads, numbers.Integral)
        or num_heads <= 0
        or units % num_heads
    ):
        raise ValueError(
            f"Argument `num_heads` must be a positive integer that divides units={units}; "
            f"received num_heads={num_heads!r}."
        )
    return int(num_heads)


def check_forget_activation(forget_activation):
    """Return ``forget_activation`` if it is one of :data:`FORGET_ACTIVATIONS`, or raise."""
    if not isinstance(forget_activation, str) or forget_activation not in FORGET_ACTIVATIONS:
        raise ValueError(
            f"Argument `forget_activation` must be one of {FORGET_ACTIVATIONS}; received "
            f"forget_activation={forget_activation!r}."
        )
    return forget_activation


def arithmetic_dtype(compute_dtype):
    """The dtype of the gate arithmetic: float32 for a 16-bit ``compute_dtype``, else itself."""
    dtype = backend.standardize_dtype(compute_dtype)
    return "float32" if dtype in _LOW_PRECISION else dtype


class _ExponentialGating(RecurrentCell):
    """What both xLSTM cells share: heads, the forget activation, the stabilized gates."""

    layout_keys = (*RecurrentCell.layout_keys, "num_heads", "forget_activation")
    refused_arguments: ClassVar[dict] = {
        **dict.fromkeys(
            ("peepholes", "peephole_initializer", "peephole_regularizer"),
            "xLSTM's gates do not look at a cell state",
        ),
        "peephole_constraint": "xLSTM's gates do not look at a cell state",
        "unit_forget_bias": "its forget gate's bias starts at the bias initializer's value",
        **dict.fromkeys(LSTM_OPTIONS, "an option of the LSTM-type cells"),
    }
    #: The stabilized gates i', f' lie in (0, 1] (gate statistics read them like sigmoids).
    gate_ranges: ClassVar[dict] = {
        "input": (0.0, 1.0),
        "forget": (0.0, 1.0),
        "candidate": (-1.0, 1.0),
        "output": (0.0, 1.0),
    }
    #: What a saturated stabilized gate means (see the module docstring).
    gate_meanings: ClassVar[dict] = {
        "input": (
            "write negligible",
            "i' ~ 0: this step's write weighs little next to the decayed memory (i~_t is far "
            "below log f_t + m_{t-1}).",
            "write dominates",
            "i' ~ 1: this step's write outweighs the decayed memory (the stabilizer m_t = i~_t).",
        ),
        "forget": (
            "memory replaced",
            "f' ~ 0: the decayed memory is negligible next to this step's write: replaced.",
            "memory kept",
            "f' ~ 1: the memory keeps its weight; the write enters scaled by i' <= 1.",
        ),
        "output": LSTMCell.gate_meanings["output"],
        "candidate": LSTMCell.gate_meanings["candidate"],
    }

    def __init__(self, units, num_heads=1, forget_activation="sigmoid", **kwargs):
        super().__init__(units, **kwargs)
        self.num_heads = check_num_heads(num_heads, self.units)
        self.head_size = self.units // self.num_heads
        self.forget_activation = check_forget_activation(forget_activation)

    @property
    def arithmetic_dtype(self):
        """float32 under a 16-bit (mixed) policy, else the compute dtype."""
        return arithmetic_dtype(self.compute_dtype)

    def upcast(self, *tensors):
        """``tensors`` (tensors or state variables) cast to :attr:`arithmetic_dtype`."""
        return [ops.cast(tensor, self.arithmetic_dtype) for tensor in tensors]

    def downcast(self, tensors):
        """``tensors`` cast to the compute dtype (how states are stored between steps)."""
        return [ops.cast(tensor, self.compute_dtype) for tensor in tensors]

    def log_forget(self, f_tilde):
        """``log f`` from the forget pre-activation: ``log sigmoid(f~)`` or, for exp, ``f~``."""
        if self.forget_activation == "exp":
            return f_tilde
        return ops.log_sigmoid(f_tilde)

    @staticmethod
    def stabilize(i_tilde, log_f, m_prev, fresh=None):
        """The stabilizer and the stabilized gates: ``m = max(log f + m_prev, i~)``,
        ``i' = exp(i~ - m)``, ``f' = exp(log f + m_prev - m)``.

        Where ``fresh`` (an empty memory, whose ``m_prev`` means nothing), ``m = i~``; ``f'``
        is then capped at 1 (it multiplies zeros), as in the official sLSTM.
        """
        m = ops.maximum(log_f + m_prev, i_tilde)
        if fresh is not None:
            m = ops.where(fresh, i_tilde, m)
        i = ops.exp(i_tilde - m)
        f = ops.exp(ops.minimum(log_f + m_prev - m, 0.0))
        return m, i, f

    def get_config(self):
        config = {"num_heads": self.num_heads, "forget_activation": self.forget_activation}
        return {**super().get_config(), **config}


@register
class SLSTMCell(_ExponentialGating):
    r"""The sLSTM cell of xLSTM: exponential gating, a normalizer, memory mixing within heads.

    Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory" (arXiv 2405.04517), section 2.2
    and appendix A.2. The recurrent weights :math:`R` are block-diagonal over ``num_heads``
    heads of ``units / num_heads`` units (memory mixes within a head, not across heads):

    .. math::

        \tilde z_t &= W_z x_t + R_z h_{t-1} + b_z, \quad
        \tilde\imath_t = W_i x_t + R_i h_{t-1} + b_i, \quad
        \tilde f_t = W_f x_t + R_f h_{t-1} + b_f, \quad
        \tilde o_t = W_o x_t + R_o h_{t-1} + b_o \\
        z_t &= \tanh(\tilde z_t), \quad i_t = \exp(\tilde\imath_t), \quad
        f_t = \sigma(\tilde f_t) \text{ or } \exp(\tilde f_t), \quad o_t = \sigma(\tilde o_t) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot z_t \\
        n_t &= f_t \odot n_{t-1} + i_t \\
        h_t &= o_t \odot c_t / n_t

    computed stabilized (eqs. 15-17): :math:`m_t = \max(\log f_t + m_{t-1}, \tilde\imath_t)`,
    :math:`i'_t = \exp(\tilde\imath_t - m_t)`, :math:`f'_t = \exp(\log f_t + m_{t-1} - m_t)`
    in place of :math:`i_t, f_t`; ``h`` is unchanged. From a fresh state (``n = 0``) the first
    step sets :math:`m_t = \tilde\imath_t`, as the official implementation does (per unit here,
    where it tests the whole batch), so ``n`` never becomes 0.

    Args:
        units: the state size (``h``, ``c``, ``n`` and ``m`` each have ``units`` entries).
        num_heads: heads of the block-diagonal recurrent weights; must divide ``units``.
        forget_activation: ``"sigmoid"`` (the default, as the official sLSTM) or ``"exp"``.
        activation: the candidate's squashing (``tanh``); recurrent_activation: the output
            gate's (``sigmoid``). The input gate is always ``exp``.
        **kwargs: as :class:`~keras_lstm_variants.LSTMCell` (no ``unit_forget_bias``).

    Weights: ``kernel`` ``(input_dim, 4 * units)`` with column blocks i, f, z, o (each ordered
    head by head); ``recurrent_kernel`` ``(num_heads, head_size, 4 * head_size)``, head ``k``
    mapping its slice of ``h`` to its own i, f, z, o columns (the official ``sLSTMCell``'s
    ``(num_heads, head_size, 4, head_size)`` reshaped); ``bias`` ``(4 * units,)``.
    State: ``[h, c, n, m]``, each ``(batch, units)``.

    >>> import keras, keras_lstm_variants as klv
    >>> layer = keras.layers.RNN(klv.SLSTMCell(8, num_heads=2))
    >>> tuple(layer(keras.random.normal((2, 5, 3))).shape)
    (2, 8)
    """

    blocks = ("input", "forget", "candidate", "output")
    gate_names = blocks
    state_names = ("h", "c", "n", "m")

    @property
    def recurrent_kernel_shape(self):
        return (self.num_heads, self.head_size, 4 * self.head_size)  # block-diagonal

    def flops_per_step(self, batch):
        """GEMM flops of one step: ``W x`` and the block-diagonal ``R h`` (``num_heads`` times
        fewer than a dense recurrent matrix)."""
        features = self.kernel.shape[0]
        return 2 * batch * (features * 4 * self.units + self.units * 4 * self.head_size)

    def recurrent_preactivations(self, h_prev, training=False):
        """``R h_prev``, ``R`` block-diagonal over the heads; columns i, f, z, o as the kernel."""
        h = self.recurrent_input(h_prev, training)
        if self.num_heads == 1:
            return ops.matmul(h, self.recurrent_kernel[0])
        heads = ops.reshape(h, (-1, self.num_heads, self.head_size))
        per_head = ops.einsum("bkd,kde->bke", heads, self.recurrent_kernel)  # (b, k, 4 * d)
        per_gate = ops.reshape(per_head, (-1, self.num_heads, 4, self.head_size))
        return ops.reshape(ops.transpose(per_gate, (0, 2, 1, 3)), (-1, 4 * self.units))

    def transition(self, z_x, states, training=False):
        h_prev, c_prev, n_prev, m_prev = states
        h_prev = ops.cast(h_prev, self.compute_dtype)
        (z,) = self.upcast(z_x + self.recurrent_preactivations(h_prev, training))
        c_prev, n_prev, m_prev = self.upcast(c_prev, n_prev, m_prev)
        i_tilde, f_tilde, z_tilde, o_tilde = ops.split(z, 4, axis=-1)
        log_f = self.log_forget(f_tilde)
        m, i, f = self.stabilize(i_tilde, log_f, m_prev, fresh=ops.equal(n_prev, 0.0))
        z = self.activation(z_tilde)
        o = self.recurrent_activation(o_tilde)
        c = f * c_prev + i * z
        n = f * n_prev + i
        h = o * c / n
        gates = {"input": i, "forget": f, "candidate": z, "output": o}
        return gates, self.downcast([h, c, n, m])


@register
class MLSTMCell(_ExponentialGating):
    r"""The mLSTM cell of xLSTM: a matrix memory with a covariance update, one step at a time.

    Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory" (arXiv 2405.04517), section 2.3
    and appendix A.3. Per head (``units / num_heads = d`` units), with scalar input and forget
    gates per head and no recurrent weights (no memory mixing):

    .. math::

        q_t &= W_q x_t + b_q, \quad k_t = (W_k x_t + b_k) / \sqrt{d}, \quad v_t = W_v x_t + b_v \\
        \tilde\imath_t &= w_i^\top x_t + b_i, \quad \tilde f_t = w_f^\top x_t + b_f, \quad
        o_t = \sigma(W_o x_t + b_o) \\
        i_t &= \exp(\tilde\imath_t), \quad f_t = \sigma(\tilde f_t) \text{ or } \exp(\tilde f_t) \\
        C_t &= f_t C_{t-1} + i_t\, v_t k_t^\top \\
        n_t &= f_t n_{t-1} + i_t\, k_t \\
        h_t &= o_t \odot C_t q_t / \max(|n_t^\top q_t|, 1)

    computed stabilized as the sLSTM (:math:`i'_t, f'_t` in place of :math:`i_t, f_t`) with the
    lower bound :math:`\exp(-m_t)` in place of 1. This step is the definition; the
    :class:`~keras_lstm_variants.MLSTM` layer trains with the equivalent parallel form
    (:meth:`parallel`), proven equal to stepping this cell.

    Args:
        units: the output size (``num_heads * d``).
        num_heads: number of heads; must divide ``units``.
        forget_activation: ``"sigmoid"`` (the default, as the official mLSTM) or ``"exp"``.
        **kwargs: :class:`~keras_lstm_variants.LSTMCell`'s input-side arguments: ``use_bias``,
            ``kernel_*``, ``bias_*``, ``dropout``, ``seed``. The cell has no recurrent weights and
            no squashing activations, so ``activation``, ``recurrent_activation``,
            ``recurrent_initializer``/``_regularizer``/``_constraint`` and ``recurrent_dropout``
            raise.

    Weights: ``kernel`` ``(input_dim, 4 * units + 2 * num_heads)`` with column blocks q, k, v
    (``units`` each, head by head), i, f (``num_heads`` each), o (``units``); ``bias`` likewise.
    State: ``[h, C, n, m]`` as 2-D tensors for ``keras.layers.RNN``: ``h`` ``(batch, units)``
    (the last output), ``C`` ``(batch, num_heads * d * d)`` (each head's ``d x d`` matrix
    row-major, rows indexed by v, columns by k), ``n`` ``(batch, units)``, ``m``
    ``(batch, num_heads)``.

    >>> import keras, keras_lstm_variants as klv
    >>> layer = keras.layers.RNN(klv.MLSTMCell(8, num_heads=2))
    >>> tuple(layer(keras.random.normal((2, 5, 3))).shape)
    (2, 8)
    """

    blocks = ("query", "key", "value", "input", "forget", "output")
    gate_names = ("input", "forget", "output")
    state_names = ("h", "C", "n", "m")
    layout_keys = ("num_heads", "forget_activation")
    #: Arguments of the base cell that have no meaning without recurrent weights.
    refused_arguments: ClassVar[dict] = {
        **_ExponentialGating.refused_arguments,
        **dict.fromkeys(
            RECURRENT_ARGUMENTS,
            "it has no recurrent weights or squashing activations (its output gate is a "
            "sigmoid, its input gate exp; no recurrent kernel, no recurrent dropout)",
        ),
    }

    def __init__(self, units, num_heads=1, forget_activation="sigmoid", **kwargs):
        super().__init__(units, num_heads=num_heads, forget_activation=forget_activation, **kwargs)
        d, heads = self.head_size, self.num_heads
        self.state_size = [self.units, heads * d * d, self.units, heads]

    @property
    def projection_width(self):
        return 4 * self.units + 2 * self.num_heads

    recurrent_kernel_shape = None  # no recurrent weights

    @property
    def kernel_width(self):
        return self.projection_width

    def flops_per_step(self, batch):
        """Flops of one recurrent step: the projection ``W x`` and, per head, the rank-one
        update of ``C`` (about ``2 d^2``) and ``C q`` (``2 d^2``). The parallel form does
        ``O(time)`` times more per step instead (its ``(time, time)`` products)."""
        features = self.kernel.shape[0]
        memory = 4 * self.num_heads * self.head_size**2
        return 2 * batch * features * self.projection_width + batch * memory

    def split(self, z):
        """``q, k, v, i~, f~, o~`` from the projection ``W x + b`` (any leading axes);
        ``k`` already divided by ``sqrt(d)``."""
        u, heads = self.units, self.num_heads
        q, k, v, i_tilde, f_tilde, o_tilde = ops.split(
            z, [u, 2 * u, 3 * u, 3 * u + heads, 3 * u + 2 * heads], axis=-1
        )
        return q, k / math.sqrt(self.head_size), v, i_tilde, f_tilde, o_tilde

    def heads(self, x):
        """``(..., units)`` -> ``(..., num_heads, d)``."""
        return ops.reshape(x, (*ops.shape(x)[:-1], self.num_heads, self.head_size))

    def per_unit(self, gate):
        """A per-head ``(batch, num_heads)`` gate repeated over each head's ``d`` units."""
        return ops.repeat(gate, self.head_size, axis=-1)

    def transition(self, z_x, states, training=False):
        _, C_prev, n_prev, m_prev = states
        q, k, v, i_tilde, f_tilde, o_tilde = self.split(*self.upcast(z_x))
        C_prev, n_prev, m_prev = self.upcast(C_prev, n_prev, m_prev)
        d = self.head_size
        q, k, v, n_prev = self.heads(q), self.heads(k), self.heads(v), self.heads(n_prev)
        C_prev = ops.reshape(C_prev, (-1, self.num_heads, d, d))
        log_f = self.log_forget(f_tilde)
        m, i, f = self.stabilize(i_tilde, log_f, m_prev)  # (batch, heads)
        C = f[..., None, None] * C_prev + i[..., None, None] * v[..., :, None] * k[..., None, :]
        n = f[..., None] * n_prev + i[..., None] * k
        # C_t q_t per head, as a product and a sum: an einsum here converts to an ONNX
        # MatMul/Reshape chain whose shapes OpenVINO cannot infer inside a Scan body.
        C_q = ops.sum(C * q[..., None, :], axis=-1)
        n_q = ops.sum(n * q, axis=-1, keepdims=True)
        h_tilde = C_q / ops.maximum(ops.abs(n_q), ops.exp(-m)[..., None])
        o = ops.sigmoid(o_tilde)
        h = o * ops.reshape(h_tilde, (-1, self.units))
        gates = {"input": self.per_unit(i), "forget": self.per_unit(f), "output": o}
        C = ops.reshape(C, (-1, self.num_heads * d * d))
        return gates, self.downcast([h, C, ops.reshape(n, (-1, self.units)), m])

    def project_sequence(self, sequences, training=False):
        """``W x_t + b`` of every step of ``sequences`` (batch, time, features) in one GEMM,
        with the sequence's one input dropout mask applied."""
        self.check_features(sequences.shape)
        if training and self.dropout > 0:
            sequences = sequences * ops.expand_dims(self.get_dropout_mask(sequences[:, 0]), 1)
        z = ops.matmul(sequences, self.kernel)
        return z if self.bias is None else z + self.bias

    def parallel(self, z, states, mask=None):
        r"""All steps at once: the paper's stabilized parallel form (appendix A.3), extended by
        the initial state.

        With :math:`F_t = \sum_{r \le t} \log f_r` and :math:`\log D_{ts} = F_t - F_s +
        \tilde\imath_s` for the steps :math:`s \le t` that write, the initial state enters as
        a column :math:`\log D_{t0} = F_t + m_0`; :math:`m_t = \max_s \log D_{ts}` over those
        (the same :math:`m_t` as stepping the cell), :math:`D = e^{\log D - m}` there and 0
        elsewhere, and

        .. math::

            \tilde h_t = \frac{\sum_s D_{ts} (q_t^\top k_s) v_s + D_{t0} C_0 q_t}
                              {\max(|\sum_s D_{ts} q_t^\top k_s + D_{t0} n_0^\top q_t|,
                                    e^{-m_t})}

        A step where ``mask`` is False neither writes nor decays (no column, :math:`\log f =
        0`), as the state is carried over there, and its projection is replaced by zeros before
        any arithmetic, so whatever it holds (NaN, inf) never reaches another step. The steps
        that do not write are selected out (``where``), never given :math:`-\infty`: the
        computation holds no infinite constant (ONNX runtimes mishandle them). Memory:
        ``(batch, num_heads, time, time)`` per intermediate; arithmetic in float32 under mixed
        precision.

        Args:
            z: the projections :meth:`project_sequence`, ``(batch, time, width)``.
            states: ``[h_0, C_0, n_0, m_0]``.
            mask: optional boolean ``(batch, time)``.
        Returns:
            ``(h, [C_T, n_T, m_T])``: ``h`` ``(batch, time, units)`` computed at every step
            (at a masked step, from the carried state and zeros for that step's q, o), and the
            final memory state.
        """
        _, C_0, n_0, m_0 = states
        z, C_0, n_0, m_0 = self.upcast(z, C_0, n_0, m_0)
        steps = ops.arange(ops.shape(z)[1])
        writes = ops.expand_dims(steps, 1) >= ops.expand_dims(steps, 0)  # (t, s): s <= t
        if mask is not None:
            mask = ops.cast(mask, "bool")
            z = ops.where(ops.expand_dims(mask, -1), z, ops.zeros_like(z))
            writes = writes[None, None] & mask[:, None, None, :]  # (batch, 1, t, s)
        q, k, v, i_tilde, f_tilde, o_tilde = self.split(z)
        d, heads = self.head_size, self.num_heads
        log_f = self.log_forget(f_tilde)  # (batch, time, heads)
        if mask is not None:
            log_f = ops.where(ops.expand_dims(mask, -1), log_f, ops.zeros_like(log_f))
        # heads first: (batch, heads, time, d) and (batch, heads, time)
        q, k, v = (ops.transpose(self.heads(t), (0, 2, 1, 3)) for t in (q, k, v))
        log_f, i_tilde = (ops.transpose(t, (0, 2, 1)) for t in (log_f, i_tilde))
        C_0 = ops.reshape(C_0, (-1, heads, d, d))
        n_0 = self.heads(n_0)
        F = ops.cumsum(log_f, axis=-1)
        log_D_0 = F + m_0[..., None]  # (batch, heads, time): always a candidate of the max
        log_D = F[..., :, None] - F[..., None, :] + i_tilde[..., None, :]
        # Entries that do not write take log D_t0 (never above the maximum), then D = 0 there.
        log_D = ops.where(writes, log_D, log_D_0[..., None])
        m = ops.maximum(ops.max(log_D, axis=-1), log_D_0)  # (batch, heads, time)
        D = ops.where(writes, ops.exp(log_D - m[..., None]), ops.zeros_like(log_D))
        D_0 = ops.exp(log_D_0 - m)
        S = ops.einsum("bktd,bksd->bkts", q, k) * D
        numerator = ops.einsum("bkts,bksd->bktd", S, v) + D_0[..., None] * ops.einsum(
            "bkij,bktj->bkti", C_0, q
        )
        denominator = ops.sum(S, axis=-1) + D_0 * ops.einsum("bkj,bktj->bkt", n_0, q)
        h_tilde = numerator / ops.maximum(ops.abs(denominator), ops.exp(-m))[..., None]
        h_tilde = ops.reshape(ops.transpose(h_tilde, (0, 2, 1, 3)), ops.shape(o_tilde))
        h = ops.sigmoid(o_tilde) * h_tilde
        D_T, D_T0 = D[:, :, -1, :], D_0[:, :, -1]
        C_T = ops.einsum("bksi,bksj->bkij", D_T[..., None] * v, k) + D_T0[..., None, None] * C_0
        n_T = ops.einsum("bks,bksj->bkj", D_T, k) + D_T0[..., None] * n_0
        C_T, n_T = ops.reshape(C_T, (-1, heads * d * d)), ops.reshape(n_T, (-1, self.units))
        (h,) = self.downcast([h])
        return h, self.downcast([C_T, n_T, m[..., -1]])

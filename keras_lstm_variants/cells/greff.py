"""The nine LSTM configurations of Greff et al.'s "LSTM: A Search Space Odyssey"."""

from typing import ClassVar

from keras import constraints, initializers, ops, regularizers

from .base import ADDITIVE_RECURRENCE, SEPARABLE_INPUT, register
from .lstm import PeepholeLSTMCell

#: The paper's nine configurations, in the paper's order (Greff et al. 2017, section III).
GREFF_VARIANTS = ("V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR")

#: Per variant: the fused weight blocks it has (in the order input, forget, candidate, output)
#: and the gates with a peephole (in the order input, forget, output). A removed gate has no
#: weights at all, so the parameter counts are the paper's.
_LAYOUT = {
    "V": (("input", "forget", "candidate", "output"), ("input", "forget", "output")),
    "NIG": (("forget", "candidate", "output"), ("forget", "output")),
    "NFG": (("input", "candidate", "output"), ("input", "output")),
    "NOG": (("input", "forget", "candidate"), ("input", "forget")),
    "NIAF": (("input", "forget", "candidate", "output"), ("input", "forget", "output")),
    "NOAF": (("input", "forget", "candidate", "output"), ("input", "forget", "output")),
    "NP": (("input", "forget", "candidate", "output"), ()),
    "CIFG": (("input", "candidate", "output"), ("input", "output")),
    "FGR": (("input", "forget", "candidate", "output"), ("input", "forget", "output")),
}

#: The gates that FGR feeds back (rows of ``gate_recurrent_kernel``) and that receive them
#: (its column blocks), in this order.
_RECURRENT_GATES = ("input", "forget", "output")


def _default(value, default):
    return default if value is None else value


def _times(gate, value):
    """``gate * value``, or ``value`` for a removed gate (``None``: the gate is fixed at 1)."""
    return value if gate is None else gate * value


@register
class GreffLSTMCell(PeepholeLSTMCell):
    r"""The LSTM of Greff et al. and the eight configurations they compare with it.

    Greff, Srivastava, Koutnik, Steunebrink & Schmidhuber 2017, "LSTM: A Search Space
    Odyssey", IEEE TNNLS 28(10), sections II and III. Their vanilla LSTM (``V``) is the
    peephole LSTM: with :math:`W` input, :math:`U` recurrent weights, :math:`p` peephole
    vectors and :math:`b` biases (the paper writes :math:`R` for :math:`U`, :math:`z` for the
    candidate :math:`g` and :math:`y` for the output :math:`h`),

    .. math::

        i_t &= \sigma(W_i x_t + U_i h_{t-1} + p_i \odot c_{t-1} + b_i) \\
        f_t &= \sigma(W_f x_t + U_f h_{t-1} + p_f \odot c_{t-1} + b_f) \\
        g_t &= \tanh(W_g x_t + U_g h_{t-1} + b_g) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        o_t &= \sigma(W_o x_t + U_o h_{t-1} + p_o \odot c_t + b_o) \\
        h_t &= o_t \odot \tanh(c_t)

    Each other configuration changes one thing (``variant=``):

    .. math::

        \text{NIG (no input gate):} &\quad i_t = 1 \\
        \text{NFG (no forget gate):} &\quad f_t = 1 \\
        \text{NOG (no output gate):} &\quad o_t = 1 \\
        \text{NIAF (no input activation):} &\quad g_t = W_g x_t + U_g h_{t-1} + b_g \\
        \text{NOAF (no output activation):} &\quad h_t = o_t \odot c_t \\
        \text{NP (no peepholes):} &\quad p_i = p_f = p_o = 0 \\
        \text{CIFG (coupled input and forget gate):} &\quad f_t = 1 - i_t \\
        \text{FGR (full gate recurrence):} &\quad
            \bar a_t \mathrel{+}= U_{ia} i_{t-1} + U_{fa} f_{t-1} + U_{oa} o_{t-1}
            \quad (a \in \{i, f, o\})

    where :math:`\bar a_t` is the pre-activation of gate :math:`a` and FGR's previous gates
    start at zero.

    Weights: ``kernel`` ``(input_dim, G * units)``, ``recurrent_kernel`` ``(units, G * units)``
    and ``bias`` ``(G * units,)``, whose ``G`` column blocks are the gates the variant has, in
    the order input, forget, candidate, output (NIG: f, g, o; NFG: i, g, o; NOG: i, f, g;
    CIFG: i, g, o); then one ``(units,)`` vector ``<gate>_gate_peephole_weights`` per gate
    with a peephole, in the order input, forget, output (NIG: f, o; NFG: i, o; NOG: i, f;
    CIFG: i, o; NP: none); FGR then has ``gate_recurrent_kernel`` ``(3 * units, 3 * units)``:
    rows for :math:`i_{t-1}, f_{t-1}, o_{t-1}`, column blocks for the i, f, o
    pre-activations (the paper's nine extra matrices). A removed gate has no weights, so
    the parameter count is the paper's: ``G * (input_dim + units + 1) * units`` plus
    ``units`` per peephole, plus ``9 * units**2`` for FGR. FGR's state is ``[h, c, gates]``,
    ``gates`` being ``concat(i_t, f_t, o_t)`` (``3 * units`` wide, zeros at the start);
    the others' is ``[h, c]``.

    Equal configurations (tests/test_greff.py proves each):

    * ``V`` is :class:`PeepholeLSTMCell` with all three peepholes (same weights, same order);
    * ``NP`` is :class:`LSTMCell` (and ``keras.layers.LSTM``), same weights;
    * ``CIFG`` is :class:`CIFGLSTMCell` with ``peepholes=("forget", "output")`` under
      :math:`f = 1 - i`, i.e. :math:`\sigma(a) = 1 - \sigma(-a)`: negate the input block to
      get CIFGLSTMCell's forget block (its kernel, recurrent kernel and bias columns, and the
      peephole vector :math:`p_f = -p_i`); the candidate and output blocks and :math:`p_o`
      are the same. ``unit_forget_bias`` follows the mapping: it starts :math:`b_i` at
      :math:`-1` (so :math:`f` starts at :math:`\sigma(1)`, as CIFGLSTMCell's :math:`b_f = 1`).

    The options of :class:`LSTMCell` (``layer_norm``, ``proj_units``, ``proj_clip``,
    ``cell_clip``, ``zoneout``, dropout) apply to every variant through the shared hooks
    (:meth:`preactivations`, :meth:`cell_update`, :meth:`hidden`); their weights follow the
    peepholes, and FGR's ``gate_recurrent_kernel`` comes last. With ``layer_norm``, FGR's
    gate-recurrence term is added after the normalized sum, not normalized itself; NOAF gives
    :math:`h_t = o_t \odot LN(c_t)`. Zoneout acts on ``h`` and ``c``, not on FGR's gates.

    Args:
        units: the number of cells.
        variant: one of :data:`GREFF_VARIANTS` (case-insensitive), default ``"V"``.
        unit_forget_bias: start :math:`b_f` at 1 (CIFG: :math:`b_i` at -1); default: on
            where the variant has a forget gate (not NFG, which rejects ``True``).
        peephole_initializer, peephole_regularizer, peephole_constraint: for the peephole
            vectors (NP, which has none, rejects them).
        gate_recurrent_initializer, gate_recurrent_regularizer, gate_recurrent_constraint:
            for FGR's ``gate_recurrent_kernel`` (other variants reject them).
        **kwargs: as :class:`LSTMCell`. The peepholes are fixed by ``variant``: there is no
            ``peepholes`` argument.

    >>> import keras, keras_lstm_variants as klv
    >>> cell = klv.GreffLSTMCell(8, variant="NIG")
    >>> tuple(keras.layers.RNN(cell)(keras.random.normal((2, 5, 3))).shape)
    (2, 8)
    >>> cell.gate_names
    ('forget', 'candidate', 'output')
    """

    #: the variant decides which blocks and peepholes the weights hold.
    layout_keys = (*PeepholeLSTMCell.layout_keys, "variant")
    capabilities = frozenset({ADDITIVE_RECURRENCE, SEPARABLE_INPUT})
    refused_arguments: ClassVar[dict] = {"peepholes": "the variant fixes the peepholes"}

    def __init__(
        self,
        units,
        variant="V",
        unit_forget_bias=None,
        peephole_initializer=None,
        peephole_regularizer=None,
        peephole_constraint=None,
        gate_recurrent_initializer=None,
        gate_recurrent_regularizer=None,
        gate_recurrent_constraint=None,
        **kwargs,
    ):
        variant = self._check_variant(variant)
        blocks, peepholes = _LAYOUT[variant]
        if unit_forget_bias is None:
            unit_forget_bias = variant != "NFG"
        elif unit_forget_bias and variant == "NFG":
            raise ValueError(
                "Argument `unit_forget_bias` needs a forget gate; variant NFG has none "
                f"(f = 1); received unit_forget_bias={unit_forget_bias!r}."
            )
        super().__init__(
            units,
            peepholes=peepholes,
            unit_forget_bias=unit_forget_bias,
            peephole_initializer=_default(peephole_initializer, "glorot_uniform"),
            peephole_regularizer=peephole_regularizer,
            peephole_constraint=peephole_constraint,
            **kwargs,
        )
        self.variant = variant
        self.blocks = blocks
        self.gate_names = tuple(
            gate
            for gate in ("input", "forget", "candidate", "output")
            if gate in blocks or (gate == "forget" and variant == "CIFG")
        )
        self.gate_recurrent_initializer = initializers.get(
            _default(gate_recurrent_initializer, "orthogonal")
        )
        self.gate_recurrent_regularizer = regularizers.get(gate_recurrent_regularizer)
        self.gate_recurrent_constraint = constraints.get(gate_recurrent_constraint)
        if variant == "NIAF":  # g is W x + U h + b itself: no bounds (for gate statistics)
            self.gate_ranges = {"candidate": (None, None)}
        if variant == "FGR":  # the gates i, f, o of the step, fed back at the next one
            self.state_size = [*self.state_size, len(_RECURRENT_GATES) * self.units]
            self.state_names = (*self.state_names, "gates")

    @staticmethod
    def _check_variant(variant):
        name = variant.upper() if isinstance(variant, str) else None
        if name not in GREFF_VARIANTS:
            raise ValueError(
                f"Argument `variant` must be one of {', '.join(GREFF_VARIANTS)} (Greff et al. "
                f"2017); received variant={variant!r}."
            )
        return name

    @classmethod
    def refusals(cls, arguments):
        """:attr:`refused_arguments`, and what the chosen variant has no use for: the
        peephole arguments without peepholes (NP), the gate-recurrence ones but for FGR."""
        refused = super().refusals(arguments)
        try:
            variant = cls._check_variant(arguments.get("variant", "V"))
        except ValueError:
            return refused  # the constructor names `variant`
        peepholes = _LAYOUT[variant][1]
        if "peepholes" in refused:
            refused["peepholes"] = (
                f"the variant fixes the peepholes ({variant}: {', '.join(peepholes) or 'none'})"
            )
        for name in ("peephole_initializer", "peephole_regularizer", "peephole_constraint"):
            if arguments.get(name) is not None and not peepholes:
                refused[name] = f"variant {variant} has no peepholes"
        for name in ("initializer", "regularizer", "constraint"):
            name = f"gate_recurrent_{name}"
            if arguments.get(name) is not None and variant != "FGR":
                refused[name] = f"variant {variant} has no gate recurrence (FGR has)"
        return refused

    # ----------------------------------------------------------------- weights
    def build_bias_initializer(self):
        if self.variant != "CIFG" or not self.unit_forget_bias:
            return super().build_bias_initializer()
        # f = 1 - sigma(a_i): a forget bias of 1 is an input bias of -1.
        input_block = self.blocks.index("input")

        def bias_initializer(shape, dtype=None):
            blocks = [self.bias_initializer((self.units,), dtype=dtype) for _ in self.blocks]
            blocks[input_block] = -ops.ones((self.units,), dtype=dtype)
            return ops.concatenate(blocks)

        return bias_initializer

    def build_more(self, input_shape):
        super().build_more(input_shape)
        if self.variant == "FGR":
            width = len(_RECURRENT_GATES) * self.units
            self.gate_recurrent_kernel = self.add_weight(
                shape=(width, width),
                name="gate_recurrent_kernel",
                initializer=self.gate_recurrent_initializer,
                regularizer=self.gate_recurrent_regularizer,
                constraint=self.gate_recurrent_constraint,
            )

    # ------------------------------------------------------------------ the step
    def gate(self, a, name, c):
        """``sigma(a[name] + p_name * c)``, or ``None`` when the variant removed gate ``name``."""
        if name not in a:
            return None
        return self.recurrent_activation(self.peek(a[name], name, c))

    def gate_recurrence(self, a, gates_prev):
        """FGR: add ``U_{ia} i_{t-1} + U_{fa} f_{t-1} + U_{oa} o_{t-1}`` to each gate ``a``."""
        feedback = ops.split(ops.matmul(gates_prev, self.gate_recurrent_kernel), 3, axis=-1)
        feedback = dict(zip(_RECURRENT_GATES, feedback, strict=True))
        return {name: z + feedback[name] if name in feedback else z for name, z in a.items()}

    def transition(self, z_x, states, training=False):
        h_prev, c_prev = states[:2]
        a = dict(zip(self.blocks, self.preactivations(z_x, h_prev, training), strict=True))
        if self.variant == "FGR":
            a = self.gate_recurrence(a, states[2])
        i = self.gate(a, "input", c_prev)  # NIG: None (i = 1)
        f = 1 - i if self.variant == "CIFG" else self.gate(a, "forget", c_prev)  # NFG: None
        g = a["candidate"] if self.variant == "NIAF" else self.activation(a["candidate"])
        c = self.cell_update(ops.add(_times(f, c_prev), _times(i, g)), c_prev, training)
        o = self.gate(a, "output", c)  # NOG: None (o = 1)
        h = self.hidden(1 if o is None else o, c, h_prev, training, squash=self.variant != "NOAF")
        gates = {"input": i, "forget": f, "candidate": g, "output": o}
        new_states = [h, c]
        if self.variant == "FGR":
            new_states.append(ops.concatenate([i, f, o], axis=-1))
        return {name: gates[name] for name in self.gate_names}, new_states

    # ------------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        del config["peepholes"]  # fixed by the variant
        if not self.peepholes:
            for key in ("peephole_initializer", "peephole_regularizer", "peephole_constraint"):
                del config[key]
        config["variant"] = self.variant
        if self.variant == "FGR":
            config.update(
                gate_recurrent_initializer=initializers.serialize(self.gate_recurrent_initializer),
                gate_recurrent_regularizer=regularizers.serialize(self.gate_recurrent_regularizer),
                gate_recurrent_constraint=constraints.serialize(self.gate_recurrent_constraint),
            )
        return config

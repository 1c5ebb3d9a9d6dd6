"""The vanilla LSTM cell and its peephole variant."""

from keras import constraints, initializers, ops, regularizers

from .base import RecurrentCell, register


@register
class LSTMCell(RecurrentCell):
    r"""The vanilla LSTM cell.

    Hochreiter & Schmidhuber 1997, "Long Short-Term Memory", with the forget gate of
    Gers, Schmidhuber & Cummins 2000, "Learning to Forget".

    .. math::

        i_t &= \sigma(W_i x_t + U_i h_{t-1} + b_i) \\
        f_t &= \sigma(W_f x_t + U_f h_{t-1} + b_f) \\
        g_t &= \tanh(W_g x_t + U_g h_{t-1} + b_g) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        o_t &= \sigma(W_o x_t + U_o h_{t-1} + b_o) \\
        h_t &= o_t \odot \tanh(c_t)

    The constructor and weights are those of ``keras.layers.LSTMCell``: ``kernel``
    ``(input_dim, 4 * units)`` and ``recurrent_kernel`` ``(units, 4 * units)`` with column
    blocks i, f, g (Keras's "c"), o, and ``bias`` ``(4 * units,)``; ``get_weights`` /
    ``set_weights`` copy both ways with ``keras.layers.LSTM``. ``unit_forget_bias`` starts
    ``b_f`` at 1 (Jozefowicz et al. 2015). Dropout: one input mask and one recurrent mask per
    sequence, shared by all gates; with ``recurrent_dropout``, Keras instead draws one mask
    per gate block, so the two agree under ``dropout`` alone (same seed) but not beyond.

    >>> import keras, keras_lstm_variants as klv
    >>> layer = keras.layers.RNN(klv.LSTMCell(8))
    >>> layer(keras.random.normal((2, 5, 3))).shape
    (2, 8)
    """

    blocks = ("input", "forget", "candidate", "output")
    gate_names = blocks
    state_names = ("h", "c")
    #: gates that may look at the cell state (see PeepholeLSTMCell); none in the vanilla LSTM.
    peephole_options = ()

    def __init__(self, units, unit_forget_bias=True, **kwargs):
        # Peephole arguments are public on PeepholeLSTMCell / CIFGLSTMCell only.
        peepholes = kwargs.pop("peepholes", ())
        peephole_initializer = kwargs.pop("peephole_initializer", "glorot_uniform")
        peephole_regularizer = kwargs.pop("peephole_regularizer", None)
        peephole_constraint = kwargs.pop("peephole_constraint", None)
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.peepholes = self._check_peepholes(peepholes)
        self.peephole_initializer = initializers.get(peephole_initializer)
        self.peephole_regularizer = regularizers.get(peephole_regularizer)
        self.peephole_constraint = constraints.get(peephole_constraint)

    def _check_peepholes(self, peepholes):
        if peepholes and not self.peephole_options:
            raise ValueError(
                f"{type(self).__name__} has no peepholes; received peepholes={peepholes!r}. "
                "Use PeepholeLSTMCell (or CIFGLSTMCell) for gates that see the cell state."
            )
        if isinstance(peepholes, str) or not isinstance(peepholes, (list, tuple)):
            raise ValueError(
                f"Argument `peepholes` must be a list or tuple of gate names from "
                f"{self.peephole_options}; received peepholes={peepholes!r}."
            )
        unknown = [p for p in peepholes if p not in self.peephole_options]
        if unknown or len(set(peepholes)) != len(peepholes):
            raise ValueError(
                f"Argument `peepholes` of {type(self).__name__} takes distinct names from "
                f"{self.peephole_options}; received peepholes={tuple(peepholes)!r}."
            )
        return tuple(p for p in self.peephole_options if p in peepholes)

    def build_bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        forget = self.blocks.index("forget")

        def bias_initializer(shape, dtype=None):
            blocks = [self.bias_initializer((self.units,), dtype=dtype) for _ in self.blocks]
            blocks[forget] = ops.ones((self.units,), dtype=dtype)
            return ops.concatenate(blocks)

        return bias_initializer

    def build(self, input_shape):
        super().build(input_shape)
        self.peephole_weights = {
            gate: self.add_weight(
                shape=(self.units,),
                name=f"{gate}_gate_peephole_weights",
                initializer=self.peephole_initializer,
                regularizer=self.peephole_regularizer,
                constraint=self.peephole_constraint,
            )
            for gate in self.peepholes
        }

    def peek(self, z, gate, c):
        """``z + p_gate * c`` when ``gate`` has a peephole, else ``z``."""
        if gate not in self.peepholes:
            return z
        return z + self.peephole_weights[gate] * c

    def preactivations(self, z_x, h_prev, training=False):
        """``W x + U h_prev + b`` split into the gate ``blocks``: one GEMM for all gates."""
        z = z_x + ops.matmul(self.recurrent_input(h_prev, training), self.recurrent_kernel)
        return ops.split(z, len(self.blocks), axis=-1)

    def cell_update(self, c, c_prev, training=False):
        """The carried cell state from the new ``c``: clipped (``cell_clip``), then zoneout
        against ``c_prev``. With both options off, ``c`` itself (no op)."""
        return c

    def hidden(self, o, c, h_prev, training=False, squash=True):
        """The output ``h = o * activation(c)`` (``o * c`` when ``squash=False``), then the
        projection (``proj_units``), ``proj_clip`` and zoneout against ``h_prev``; with the
        options off, exactly ``o * activation(c)``."""
        if squash:
            return o * self.activation(c)
        return o * c

    def transition(self, z_x, states, training=False):
        h_prev, c_prev = states
        z_i, z_f, z_g, z_o = self.preactivations(z_x, h_prev, training)
        i = self.recurrent_activation(self.peek(z_i, "input", c_prev))
        f = self.recurrent_activation(self.peek(z_f, "forget", c_prev))
        g = self.activation(z_g)
        c = self.cell_update(f * c_prev + i * g, c_prev, training)
        o = self.recurrent_activation(self.peek(z_o, "output", c))
        h = self.hidden(o, c, h_prev, training)
        return {"input": i, "forget": f, "candidate": g, "output": o}, [h, c]

    def get_config(self):
        config = {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}
        if self.peephole_options:
            config.update(
                peepholes=list(self.peepholes),
                peephole_initializer=initializers.serialize(self.peephole_initializer),
                peephole_regularizer=regularizers.serialize(self.peephole_regularizer),
                peephole_constraint=constraints.serialize(self.peephole_constraint),
            )
        return config


@register
class PeepholeLSTMCell(LSTMCell):
    r"""LSTM cell with peephole connections from the cell state to the gates.

    Gers & Schmidhuber 2000, "Recurrent nets that time and count". Each enabled gate adds a
    diagonal (elementwise) weight ``p`` on the cell state; the input and forget gates see
    :math:`c_{t-1}`, the output gate sees the new :math:`c_t`:

    .. math::

        i_t &= \sigma(W_i x_t + U_i h_{t-1} + p_i \odot c_{t-1} + b_i) \\
        f_t &= \sigma(W_f x_t + U_f h_{t-1} + p_f \odot c_{t-1} + b_f) \\
        g_t &= \tanh(W_g x_t + U_g h_{t-1} + b_g) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        o_t &= \sigma(W_o x_t + U_o h_{t-1} + p_o \odot c_t + b_o) \\
        h_t &= o_t \odot \tanh(c_t)

    Args:
        peepholes: any subset of ``("input", "forget", "output")``; ``()`` is the vanilla
            LSTM. The weights are LSTMCell's followed by one ``(units,)`` vector per enabled
            gate, in the order input, forget, output.
        peephole_initializer, peephole_regularizer, peephole_constraint: for those vectors.
        Everything else as :class:`LSTMCell`.

    >>> import keras, keras_lstm_variants as klv
    >>> cell = klv.PeepholeLSTMCell(8, peepholes=("forget", "output"))
    >>> keras.layers.RNN(cell)(keras.random.normal((2, 5, 3))).shape
    (2, 8)
    """

    peephole_options = ("input", "forget", "output")

    def __init__(
        self,
        units,
        peepholes=("input", "forget", "output"),
        peephole_initializer="glorot_uniform",
        peephole_regularizer=None,
        peephole_constraint=None,
        **kwargs,
    ):
        super().__init__(
            units,
            peepholes=peepholes,
            peephole_initializer=peephole_initializer,
            peephole_regularizer=peephole_regularizer,
            peephole_constraint=peephole_constraint,
            **kwargs,
        )

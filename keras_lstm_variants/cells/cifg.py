"""The LSTM with coupled input and forget gates (CIFG)."""

from .base import ADDITIVE_RECURRENCE, ONNX_LSTM, SEPARABLE_INPUT, register
from .lstm import PeepholeLSTMCell


@register
class CIFGLSTMCell(PeepholeLSTMCell):
    r"""LSTM with coupled input and forget gates: the input gate is ``1 - f``.

    Greff et al. 2017, "LSTM: A Search Space Odyssey" (the CIFG variant); the coupling goes
    back to Gers & Schmidhuber 2000. One gate decides both how much to keep and how much to
    write, so the cell has three gate blocks instead of four (25% fewer gate weights):

    .. math::

        f_t &= \sigma(W_f x_t + U_f h_{t-1} + p_f \odot c_{t-1} + b_f) \\
        i_t &= 1 - f_t \\
        g_t &= \tanh(W_g x_t + U_g h_{t-1} + b_g) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        o_t &= \sigma(W_o x_t + U_o h_{t-1} + p_o \odot c_t + b_o) \\
        h_t &= o_t \odot \tanh(c_t)

    Weights: ``kernel`` ``(input_dim, 3 * units)`` and ``recurrent_kernel``
    ``(units, 3 * units)`` with column blocks f, g, o; ``bias`` ``(3 * units,)``
    (``unit_forget_bias`` applies to f). Peepholes are off by default; ``peepholes`` may
    enable ``"forget"`` and/or ``"output"``, whose ``(units,)`` vectors follow in that order.
    :meth:`transition` reports ``input`` (= 1 - forget) beside the three computed gates.
    The options ``layer_norm``, ``proj_units``, ``proj_clip``, ``cell_clip`` and ``zoneout``
    are :class:`~keras_lstm_variants.LSTMCell`'s (the norms are ``(3 * units,)`` here).

    >>> import keras, keras_lstm_variants as klv
    >>> tuple(keras.layers.RNN(klv.CIFGLSTMCell(8))(keras.random.normal((2, 5, 3))).shape)
    (2, 8)
    """

    blocks = ("forget", "candidate", "output")
    gate_names = ("input", "forget", "candidate", "output")
    capabilities = frozenset({ADDITIVE_RECURRENCE, SEPARABLE_INPUT, ONNX_LSTM})
    peephole_options = ("forget", "output")

    def __init__(self, units, peepholes=(), **kwargs):
        super().__init__(units, peepholes=peepholes, **kwargs)

    def transition(self, z_x, states, training=False):
        h_prev, c_prev = states
        z_f, z_g, z_o = self.preactivations(z_x, h_prev, training)
        f = self.recurrent_activation(self.peek(z_f, "forget", c_prev))
        i = 1 - f
        g = self.activation(z_g)
        c = self.cell_update(f * c_prev + i * g, c_prev, training)
        o = self.recurrent_activation(self.peek(z_o, "output", c))
        h = self.hidden(o, c, h_prev, training)
        return {"input": i, "forget": f, "candidate": g, "output": o}, [h, c]

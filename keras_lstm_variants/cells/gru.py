"""The gated recurrent unit."""

from keras import ops

from .base import RecurrentCell, register


@register
class GRUCell(RecurrentCell):
    r"""The gated recurrent unit.

    Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder for
    Statistical Machine Translation". An update gate ``z`` and a reset gate ``r``; no separate
    cell state. With ``reset_after=False`` (the paper):

    .. math::

        z_t &= \sigma(W_z x_t + U_z h_{t-1} + b_z) \\
        r_t &= \sigma(W_r x_t + U_r h_{t-1} + b_r) \\
        \tilde h_t &= \tanh(W_h x_t + U_h (r_t \odot h_{t-1}) + b_h) \\
        h_t &= z_t \odot h_{t-1} + (1 - z_t) \odot \tilde h_t

    With ``reset_after=True`` (Keras's default, the cuDNN form) the reset gate multiplies the
    recurrent product instead, which has its own bias:
    :math:`\tilde h_t = \tanh(W_h x_t + b_h + r_t \odot (U_h h_{t-1} + b'_h))`.

    Constructor, weights and equations are those of ``keras.layers.GRUCell``: ``kernel``
    ``(input_dim, 3 * units)`` and ``recurrent_kernel`` ``(units, 3 * units)`` with column
    blocks z, r, h; ``bias`` ``(3 * units,)``, or ``(2, 3 * units)`` (input row, recurrent
    row) when ``reset_after``. One difference: with ``recurrent_dropout``, Keras draws a
    separate input mask and recurrent mask for each of the three gate blocks; here one input
    mask and one recurrent mask serve all gates (Gal & Ghahramani 2016's tied variant). As in
    Keras, dropout touches only the products, so ``h_t`` mixes the true previous state.

    >>> import keras, keras_lstm_variants as klv
    >>> keras.layers.RNN(klv.GRUCell(8))(keras.random.normal((2, 5, 3))).shape
    (2, 8)
    """

    blocks = ("update", "reset", "candidate")
    gate_names = blocks
    state_names = ("h",)

    def __init__(self, units, reset_after=True, **kwargs):
        super().__init__(units, **kwargs)
        self.reset_after = bool(reset_after)

    @property
    def bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    @property
    def input_bias(self):
        if self.bias is None or not self.reset_after:
            return self.bias
        return self.bias[0]

    def transition(self, z_x, states, training=False):
        (h_prev,) = states
        x_z, x_r, x_h = ops.split(z_x, 3, axis=-1)
        h_in = self.recurrent_input(h_prev, training)
        if self.reset_after:
            u = ops.matmul(h_in, self.recurrent_kernel)
            if self.bias is not None:
                u = u + self.bias[1]
            u_z, u_r, u_h = ops.split(u, 3, axis=-1)
            z = self.recurrent_activation(x_z + u_z)
            r = self.recurrent_activation(x_r + u_r)
            h_tilde = self.activation(x_h + r * u_h)
        else:
            u_z, u_r = ops.split(ops.matmul(h_in, self.recurrent_kernel[:, : 2 * self.units]), 2, axis=-1)
            z = self.recurrent_activation(x_z + u_z)
            r = self.recurrent_activation(x_r + u_r)
            h_tilde = self.activation(x_h + ops.matmul(r * h_in, self.recurrent_kernel[:, 2 * self.units :]))
        h = z * h_prev + (1 - z) * h_tilde
        return {"update": z, "reset": r, "candidate": h_tilde}, [h]

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}

"""The gated recurrent unit."""

from typing import ClassVar

from keras import ops

from . import options
from .base import ONNX_GRU, SEPARABLE_INPUT, TORCH_GRU, RecurrentCell, register
from .lstm import CANDIDATE_MEANING


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

    Options (off by default; off adds no op and no weight):

    * ``layer_norm=True`` (needs ``reset_after=True``, where each product is one GEMM) --
      Ba, Kiros & Hinton 2016, as in the LSTM: one LN with its own gain and bias per fused
      product, the biases after it,

      .. math::

          (x_z, x_r, x_h) &= \mathrm{LN}(W x_t) + b, \quad
          (u_z, u_r, u_h) = \mathrm{LN}(U h_{t-1}) + b' \\
          z_t &= \sigma(x_z + u_z), \quad r_t = \sigma(x_r + u_r), \quad
          \tilde h_t = \tanh(x_h + r_t \odot u_h)

      with weights ``kernel_norm_gamma``, ``kernel_norm_beta``, ``recurrent_norm_gamma``,
      ``recurrent_norm_beta`` (each ``(3 * units,)``), ``norm_epsilon`` (default 1e-3).
    * ``zoneout=z`` -- Krueger et al. 2017 on the one state:
      :math:`h_t = d_t \odot h_{t-1} + (1 - d_t) \odot h^{GRU}_t`, a fresh
      :math:`d_t \sim \mathrm{Bernoulli}(z)` per step in training, the expectation at
      inference.

    ``proj_units``, ``proj_clip`` and ``cell_clip`` belong to the LSTM family (the GRU has no
    cell state and its h is its gate's interpolation): passing them raises, naming them.

    >>> import keras, keras_lstm_variants as klv
    >>> tuple(keras.layers.RNN(klv.GRUCell(8))(keras.random.normal((2, 5, 3))).shape)
    (2, 8)
    >>> layer = keras.layers.RNN(klv.GRUCell(8, layer_norm=True, zoneout=0.1))
    >>> tuple(layer(keras.random.normal((2, 5, 3))).shape)
    (2, 8)
    """

    blocks = ("update", "reset", "candidate")
    gate_names = blocks
    capabilities = frozenset({SEPARABLE_INPUT, TORCH_GRU, ONNX_GRU})
    state_names = ("h",)
    layout_keys = (*RecurrentCell.layout_keys, "reset_after", "layer_norm")
    refused_arguments: ClassVar[dict] = {
        **dict.fromkeys(
            ("proj_units", "proj_clip", "cell_clip"),
            "the GRU has no cell state to clip or project (an option of the LSTM-type cells)",
        ),
        **dict.fromkeys(
            ("peepholes", "peephole_initializer", "peephole_regularizer", "peephole_constraint"),
            "the GRU has no cell state for a gate to look at",
        ),
        "unit_forget_bias": "the GRU has no forget gate",
    }
    gate_meanings: ClassVar[dict] = {
        "update": (
            "replaces h",
            "An update gate here replaces the state by the candidate at every step (GRU: h_t = "
            "z h_{t-1} + (1 - z) h~_t, z ~ 0): no memory.",
            "keeps h",
            "An update gate here keeps the previous state (z ~ 1): an integrator, like an open "
            "forget gate.",
        ),
        "reset": (
            "ignores h",
            "A reset gate here hides the previous state from the candidate: it is computed from "
            "the input alone, a reset.",
            "uses h",
            "A reset gate here lets the whole previous state into the candidate.",
        ),
        "candidate": CANDIDATE_MEANING,
    }

    def __init__(
        self,
        units,
        reset_after=True,
        layer_norm=False,
        norm_epsilon=options.DEFAULT_EPSILON,
        zoneout=0.0,
        **kwargs,
    ):
        reset_after = options.check_flag("reset_after", reset_after)
        layer_norm = options.check_flag("layer_norm", layer_norm)
        norm_epsilon = options.check_epsilon(norm_epsilon, layer_norm)
        if layer_norm and not reset_after:
            raise ValueError(
                "Argument `layer_norm` of GRUCell needs reset_after=True (each recurrent product "
                "is then one GEMM to normalize); received layer_norm=True, reset_after=False."
            )
        zoneout = options.check_zoneout(zoneout, ("h",))
        super().__init__(units, **kwargs)
        self.reset_after = reset_after
        self.layer_norm = layer_norm
        self.norm_epsilon = norm_epsilon
        self.zoneout = zoneout[0]
        self.zoneout_rates = {"h": self.zoneout}

    def build_more(self, input_shape):
        if self.layer_norm:
            self.kernel_norm = options.add_norm(self, "kernel", 3 * self.units)
            self.recurrent_norm = options.add_norm(self, "recurrent", 3 * self.units)

    @property
    def bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    @property
    def input_bias(self):
        if self.layer_norm:  # the bias follows LN(W x) (see transition)
            return None
        if self.bias is None or not self.reset_after:
            return self.bias
        return self.bias[0]

    def transition(self, z_x, states, training=False):
        (h_prev,) = states
        h_in = self.recurrent_input(h_prev, training)
        if self.reset_after:
            u = ops.matmul(h_in, self.recurrent_kernel)
            if self.layer_norm:  # LN(W x) + b and LN(U h) + b'
                z_x = self.normalize(z_x, self.kernel_norm)
                u = self.normalize(u, self.recurrent_norm)
                if self.bias is not None:
                    z_x = z_x + self.bias[0]
            if self.bias is not None:
                u = u + self.bias[1]
            x_z, x_r, x_h = ops.split(z_x, 3, axis=-1)
            u_z, u_r, u_h = ops.split(u, 3, axis=-1)
            z = self.recurrent_activation(x_z + u_z)
            r = self.recurrent_activation(x_r + u_r)
            h_tilde = self.activation(x_h + r * u_h)
        else:
            x_z, x_r, x_h = ops.split(z_x, 3, axis=-1)
            u_zr = ops.matmul(h_in, self.recurrent_kernel[:, : 2 * self.units])
            u_z, u_r = ops.split(u_zr, 2, axis=-1)
            z = self.recurrent_activation(x_z + u_z)
            r = self.recurrent_activation(x_r + u_r)
            u_h = ops.matmul(r * h_in, self.recurrent_kernel[:, 2 * self.units :])
            h_tilde = self.activation(x_h + u_h)
        h = z * h_prev + (1 - z) * h_tilde
        return {"update": z, "reset": r, "candidate": h_tilde}, [h]

    def get_config(self):
        return {
            **super().get_config(),
            "reset_after": self.reset_after,
            "layer_norm": self.layer_norm,
            "norm_epsilon": self.norm_epsilon,
            "zoneout": self.zoneout,
        }

"""The vanilla LSTM cell and its peephole variant."""

from typing import ClassVar

from keras import constraints, initializers, ops, regularizers

from . import options
from .base import (
    ADDITIVE_RECURRENCE,
    ONNX_LSTM,
    SEPARABLE_INPUT,
    TF_BLOCK_LSTM,
    TORCH_LSTM,
    RecurrentCell,
    register,
)

#: What a saturated candidate means (the LSTM's g, the GRU's h~: a tanh).
CANDIDATE_MEANING = (
    "proposes -1",
    "A candidate here proposes -1 for the new state: where it is let in, a one-bit memory "
    "is written.",
    "proposes +1",
    "A candidate here proposes +1 for the new state: where it is let in, a one-bit memory "
    "is written.",
)


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

    Options (all off by default; off adds no op and no weight), shared by every LSTM-type cell
    (:class:`PeepholeLSTMCell`, ``CIFGLSTMCell``, ``GreffLSTMCell``) through the hooks
    :meth:`preactivations`, :meth:`cell_update` and :meth:`hidden`:

    * ``layer_norm=True`` -- Ba, Kiros & Hinton 2016, "Layer Normalization" (their LSTM,
      section 6 / appendix), one LN with its own gain and bias per fused product and one on
      the cell state, :math:`\epsilon` = ``norm_epsilon`` (default 1e-3):

      .. math::

          (z_i, z_f, z_g, z_o) &= \mathrm{LN}(W x_t) + \mathrm{LN}(U h_{t-1}) + b \\
          h_t &= o_t \odot \tanh(\mathrm{LN}(c_t))

      The *unnormalized* :math:`c_t` is carried to the next step, as in the paper. TF Addons'
      ``LayerNormLSTMCell`` differs: it carries the normalized cell state (and normalizes each
      gate's block separately), so the two are not interchangeable. Weights (after the
      peepholes): ``kernel_norm_gamma``, ``kernel_norm_beta``, ``recurrent_norm_gamma``,
      ``recurrent_norm_beta`` (each ``(4 * units,)``), ``cell_norm_gamma``,
      ``cell_norm_beta`` (``(units,)``).
    * ``proj_units=P`` -- Sak, Senior & Beaufays 2014 (LSTMP):
      :math:`h_t = (o_t \odot \tanh(c_t))\, W_{proj}`, P wide; it is the output and it feeds
      the gates, so ``recurrent_kernel`` is ``(P, 4 * units)``, ``state_size`` is
      ``[P, units]``. Weight ``projection_kernel`` ``(units, P)`` (last; initialized by
      ``projection_initializer``). Equal to ``torch.nn.LSTM(proj_size=P)`` with weights from
      :func:`keras_lstm_variants.weights_from_torch_lstm`. ``proj_clip=C`` clips
      :math:`h_t` to ``[-C, C]`` after the projection.
    * ``cell_clip=C`` -- TF's ``LSTMBlockCell`` semantics: :math:`c_t` is clipped to
      ``[-C, C]`` right after its update, before the output gate's peephole and :math:`h_t`.
    * ``zoneout=(z_c, z_h)`` or one float for both -- Krueger et al. 2017, "Zoneout". In
      training, a fresh mask per step :math:`d \sim \mathrm{Bernoulli}(z)` per unit:

      .. math::

          c_t &= d^c_t \odot c_{t-1} + (1 - d^c_t) \odot (f_t \odot c_{t-1} + i_t \odot g_t) \\
          h_t &= d^h_t \odot h_{t-1} + (1 - d^h_t) \odot (o_t \odot \tanh(f_t \odot c_{t-1}
          + i_t \odot g_t))

      (``h`` sees the new cell state, not the zoned-out one); at inference the expectation,
      :math:`c_t = z_c c_{t-1} + (1 - z_c) \tilde c_t` and likewise for ``h``. Masks come
      from the cell's seed generator (``seed``), like dropout's.

    >>> import keras, keras_lstm_variants as klv
    >>> layer = keras.layers.RNN(klv.LSTMCell(8))
    >>> tuple(layer(keras.random.normal((2, 5, 3))).shape)
    (2, 8)
    >>> cell = klv.LSTMCell(8, proj_units=4, layer_norm=True, cell_clip=10.0, zoneout=0.1)
    >>> tuple(keras.layers.RNN(cell)(keras.random.normal((2, 5, 3))).shape)
    (2, 4)
    """

    blocks = ("input", "forget", "candidate", "output")
    gate_names = blocks
    step_methods = (*RecurrentCell.step_methods, "preactivations", "cell_update", "hidden")
    capabilities = frozenset(
        {ADDITIVE_RECURRENCE, SEPARABLE_INPUT, TORCH_LSTM, TF_BLOCK_LSTM, ONNX_LSTM}
    )
    state_names = ("h", "c")
    #: gates that may look at the cell state (see PeepholeLSTMCell); none in the vanilla LSTM.
    peephole_options = ()
    refused_arguments: ClassVar[dict] = dict.fromkeys(
        ("peepholes", "peephole_initializer", "peephole_regularizer", "peephole_constraint"),
        "the vanilla LSTM has no peepholes",
    )
    #: which gates have peephole vectors, layer norm and a projection give the weights after
    #: ``bias`` (and ``recurrent_kernel``'s shape) their meaning.
    layout_keys = (*RecurrentCell.layout_keys, "peepholes", "layer_norm", "proj_units")
    gate_meanings: ClassVar[dict] = {
        "input": (
            "ignores input",
            "An input gate here writes nothing: the cell keeps its content whatever the input.",
            "always writes",
            "An input gate here writes its candidate into the cell at every step.",
        ),
        "forget": (
            "erases memory",
            "A forget gate here erases its cell at every step (c_t ~ i_t g_t): no memory.",
            "keeps memory",
            "A forget gate here keeps its cell (c_t ~ c_{t-1} + ...): an integrator, long-term "
            "memory.",
        ),
        "output": (
            "hides its cell",
            "An output gate here hides its cell: the unit remembers without outputting (h ~ 0).",
            "shows its cell",
            "An output gate here shows its cell fully at every step (h = tanh(c)).",
        ),
        "candidate": CANDIDATE_MEANING,
    }

    def __init__(
        self,
        units,
        unit_forget_bias=True,
        layer_norm=False,
        norm_epsilon=options.DEFAULT_EPSILON,
        proj_units=None,
        proj_clip=None,
        projection_initializer="glorot_uniform",
        cell_clip=None,
        zoneout=0.0,
        **kwargs,
    ):
        # Peephole arguments are public on PeepholeLSTMCell / CIFGLSTMCell only.
        peepholes = kwargs.pop("peepholes", ())
        peephole_initializer = kwargs.pop("peephole_initializer", "glorot_uniform")
        peephole_regularizer = kwargs.pop("peephole_regularizer", None)
        peephole_constraint = kwargs.pop("peephole_constraint", None)
        layer_norm = options.check_flag("layer_norm", layer_norm)
        norm_epsilon = options.check_epsilon(norm_epsilon, layer_norm)
        proj_units = options.check_positive("proj_units", proj_units, integer=True)
        proj_clip = options.check_positive("proj_clip", proj_clip)
        if proj_clip is not None and proj_units is None:
            raise ValueError(
                f"Argument `proj_clip` clips the projection and needs `proj_units`; received "
                f"proj_clip={proj_clip!r} with proj_units=None."
            )
        cell_clip = options.check_positive("cell_clip", cell_clip)
        zoneout = options.check_zoneout(zoneout, ("c", "h"))
        unit_forget_bias = options.check_flag("unit_forget_bias", unit_forget_bias)
        super().__init__(units, **kwargs)
        self.unit_forget_bias = unit_forget_bias
        self.peepholes = self._check_peepholes(peepholes)
        self.peephole_initializer = initializers.get(peephole_initializer)
        self.peephole_regularizer = regularizers.get(peephole_regularizer)
        self.peephole_constraint = constraints.get(peephole_constraint)
        self.layer_norm = layer_norm
        self.norm_epsilon = norm_epsilon
        self.proj_units = proj_units
        self.proj_clip = proj_clip
        self.projection_initializer = initializers.get(projection_initializer)
        self.cell_clip = cell_clip
        self.zoneout = zoneout
        self.zoneout_rates = dict(zip(("c", "h"), zoneout, strict=True))
        # h is the projection when there is one: it is the output and feeds the gates.
        self.output_size = proj_units or self.units
        self.state_size = [self.output_size, self.units]

    def _check_peepholes(self, peepholes):
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

    def build_more(self, input_shape):
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
        if self.layer_norm:
            width = len(self.blocks) * self.units
            self.kernel_norm = options.add_norm(self, "kernel", width)
            self.recurrent_norm = options.add_norm(self, "recurrent", width)
            self.cell_norm = options.add_norm(self, "cell", self.units)
        if self.proj_units:
            self.projection_kernel = self.add_weight(
                shape=(self.units, self.proj_units),
                name="projection_kernel",
                initializer=self.projection_initializer,
            )

    @property
    def input_bias(self):
        # Under layer norm the bias follows the normalized products (see preactivations).
        return None if self.layer_norm else self.bias

    def peek(self, z, gate, c):
        """``z + p_gate * c`` when ``gate`` has a peephole, else ``z``."""
        if gate not in self.peepholes:
            return z
        return z + self.peephole_weights[gate] * c

    def preactivations(self, z_x, h_prev, training=False):
        """``W x + U h_prev + b`` split into the gate ``blocks``: one GEMM for all gates.

        With ``layer_norm``: ``LN(W x) + LN(U h_prev) + b`` (``z_x`` is then ``W x`` alone).
        """
        z_h = ops.matmul(self.recurrent_input(h_prev, training), self.recurrent_kernel)
        if self.layer_norm:
            z = self.normalize(z_x, self.kernel_norm) + self.normalize(z_h, self.recurrent_norm)
            if self.bias is not None:
                z = z + self.bias
        else:
            z = z_x + z_h
        return ops.split(z, len(self.blocks), axis=-1)

    def cell_update(self, c, c_prev, training=False):
        """The cell state ``c`` clipped to ``[-cell_clip, cell_clip]`` (TF's LSTMBlockCell):
        what the output gate's peephole, ``h`` and the next step see. Without ``cell_clip``,
        ``c`` itself (no op). (Zoneout of the carried ``c`` follows the whole step, in
        :meth:`gates`, so that ``h`` sees the new ``c`` as in Krueger et al.)"""
        return options.clip(c, self.cell_clip)

    def hidden(self, o, c, h_prev, training=False, squash=True):
        """The output ``h = o * activation(LN(c))`` (``o * LN(c)`` when ``squash=False``), then
        the projection ``h W_proj`` (``proj_units``) and ``proj_clip``; with the options off,
        exactly ``o * activation(c)``. ``h_prev`` is not used by these options (zoneout of
        ``h`` against it follows the whole step, in :meth:`gates`); it is part of the hook's
        signature for subclasses that need it."""
        if self.layer_norm:
            c = self.normalize(c, self.cell_norm)
        h = o * self.activation(c) if squash else o * c
        if self.proj_units:
            h = options.clip(ops.matmul(h, self.projection_kernel), self.proj_clip)
        return h

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
        config = {
            **super().get_config(),
            "unit_forget_bias": self.unit_forget_bias,
            "layer_norm": self.layer_norm,
            "norm_epsilon": self.norm_epsilon,
            "proj_units": self.proj_units,
            "proj_clip": self.proj_clip,
            "projection_initializer": initializers.serialize(self.projection_initializer),
            "cell_clip": self.cell_clip,
            "zoneout": list(self.zoneout),
        }
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
        **kwargs: as :class:`LSTMCell`, its options (``layer_norm``, ``proj_units``,
            ``proj_clip``, ``cell_clip``, ``zoneout``) included; their weights follow the
            peephole vectors.

    >>> import keras, keras_lstm_variants as klv
    >>> cell = klv.PeepholeLSTMCell(8, peepholes=("forget", "output"))
    >>> tuple(keras.layers.RNN(cell)(keras.random.normal((2, 5, 3))).shape)
    (2, 8)
    """

    # torch.nn.LSTM has no peepholes: the LSTM cell's kernels less that one
    capabilities = frozenset({ADDITIVE_RECURRENCE, SEPARABLE_INPUT, TF_BLOCK_LSTM, ONNX_LSTM})

    peephole_options = ("input", "forget", "output")
    refused_arguments: ClassVar[dict] = {}

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

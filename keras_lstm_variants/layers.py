"""Sequence layers: ``keras.layers.RNN`` over each cell, as ``keras.layers.LSTM`` wraps its cell.

The layers take ``keras.layers.LSTM``'s arguments (the cell's, plus ``return_sequences``,
``return_state``, ``go_backwards``, ``stateful``, ``unroll``) and drive the backend's time
loop directly (:meth:`VariantRNN.inner_loop`). Each step goes through the cell's own
:meth:`~keras_lstm_variants.cells.base.RecurrentCell.gates` (input projection, then
``transition``), so the layers and ``keras.layers.RNN(cell)`` compute the same equations
(tests/test_layers.py proves it, forward and gradients).
"""

import inspect
import re

from keras import layers

from ._compat import rnn
from .cells import CIFGLSTMCell, GRUCell, LSTMCell, PeepholeLSTMCell
from .cells.base import register


def _cell_arguments(cell_class):
    """Constructor argument names of ``cell_class`` and the cell classes it builds on."""
    names = set()
    for klass in cell_class.__mro__:
        if klass.__module__.startswith(__package__):
            names.update(inspect.signature(klass.__init__).parameters)
    return names - {"self", "kwargs", "units"}


def _from_cell(name):
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's ``{name}``.")


class VariantRNN(layers.RNN):
    """Base of the sequence layers: builds ``cell_class`` from the arguments, runs the fast path."""

    cell_class = None

    def __init__(
        self,
        units,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        **kwargs,
    ):
        accepted = _cell_arguments(self.cell_class)
        cell_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in accepted}
        cell_name = re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", self.cell_class.__name__).lower()
        cell = self.cell_class(
            units,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name=cell_name,
            **cell_kwargs,
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            **kwargs,
        )

    units = _from_cell("units")
    activation = _from_cell("activation")
    recurrent_activation = _from_cell("recurrent_activation")
    use_bias = _from_cell("use_bias")
    dropout = _from_cell("dropout")
    recurrent_dropout = _from_cell("recurrent_dropout")

    def _check_inputs(self, shape):
        if len(shape) != 3:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects `inputs` shaped "
                f"(batch, time, features); received shape {tuple(shape)}."
            )
        if self.cell.built:
            self.cell.check_features(shape)

    def build(self, sequences_shape, initial_state_shape=None):
        self._check_inputs(sequences_shape)
        super().build(sequences_shape, initial_state_shape)

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        # Keras calls this instead of `call` on symbolic inputs: check them here too.
        self._check_inputs(sequences_shape)
        if initial_state_shape is not None:
            shapes = initial_state_shape
            if not shapes or not isinstance(shapes[0], (list, tuple)):
                shapes = [shapes]  # one state tensor passed on its own
            self._check_initial_state(sequences_shape, shapes)
        return super().compute_output_shape(sequences_shape, initial_state_shape)

    def _check_initial_state(self, sequences_shape, state_shapes):
        if len(state_shapes) != len(self.state_size):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' takes {len(self.state_size)} "
                f"`initial_state` tensor(s) {self.cell.state_names}; received {len(state_shapes)}."
            )
        batch = sequences_shape[0]
        for name, size, shape in zip(self.cell.state_names, self.state_size, state_shapes):
            shape = tuple(shape)
            if len(shape) != 2 or shape[1] != size or None not in (batch, shape[0]) and shape[0] != batch:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': `initial_state` {name} must have shape "
                    f"(batch={batch}, {size}); received shape {shape}."
                )

    def call(self, sequences, initial_state=None, mask=None, training=False):
        self._check_inputs(sequences.shape)
        if initial_state is not None:
            states = initial_state if isinstance(initial_state, (list, tuple)) else [initial_state]
            self._check_initial_state(sequences.shape, [state.shape for state in states])
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        """Run :meth:`~keras_lstm_variants.cells.base.RecurrentCell.gates` over the time axis.

        Each step projects its own input (``W x_t + b``), then calls ``transition``. Projecting
        every step in one GEMM before the loop measured slower on CPU (README, "Speed": 1.15-2.1x
        the CPU time at the bench's default shape, train and inference, with and without XLA;
        1.0-1.35x in the long case): that projection is ``G * units / features`` times larger
        than the input (16x at the default shape), and the loop's transpose and per-step
        TensorArray copies of it cost more memory traffic than the small per-step GEMM saves.
        """
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        cell = self.cell

        def step(x_t, states):
            _, new_states = cell.gates(x_t, list(states), training)
            return new_states[0], new_states

        return rnn(
            step,
            sequences,
            list(initial_state),
            go_backwards=self.go_backwards,
            mask=mask,
            unroll=self.unroll,
            input_length=sequences.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )

    def get_config(self):
        config = super().get_config()
        cell_config = dict(config.pop("cell")["config"])
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        return {**config, **cell_config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


_LAYER_ARGS = """
    Args:
        units: dimensionality of the output and of each state.
        return_sequences, return_state, go_backwards, stateful, unroll: as ``keras.layers.LSTM``.
        **kwargs: the cell's arguments (see :class:`{cell}`) and ``keras.layers.Layer``'s.
"""


@register
class LSTM(VariantRNN):
    __doc__ = (
        "The vanilla LSTM over a sequence; a drop-in for ``keras.layers.LSTM`` (same arguments"
        " and weights, never the cuDNN-only kernel, so it runs under XLA and exports anywhere)."
        + _LAYER_ARGS.format(cell="LSTMCell")
    )
    cell_class = LSTMCell
    unit_forget_bias = _from_cell("unit_forget_bias")


@register
class PeepholeLSTM(VariantRNN):
    __doc__ = "An LSTM with peephole connections over a sequence." + _LAYER_ARGS.format(
        cell="PeepholeLSTMCell"
    )
    cell_class = PeepholeLSTMCell
    unit_forget_bias = _from_cell("unit_forget_bias")
    peepholes = _from_cell("peepholes")


@register
class CIFGLSTM(VariantRNN):
    __doc__ = "An LSTM with coupled input and forget gates over a sequence." + _LAYER_ARGS.format(
        cell="CIFGLSTMCell"
    )
    cell_class = CIFGLSTMCell
    unit_forget_bias = _from_cell("unit_forget_bias")
    peepholes = _from_cell("peepholes")


@register
class GRU(VariantRNN):
    __doc__ = (
        "The GRU over a sequence; the arguments and weights of ``keras.layers.GRU``."
        + _LAYER_ARGS.format(cell="GRUCell")
    )
    cell_class = GRUCell
    reset_after = _from_cell("reset_after")

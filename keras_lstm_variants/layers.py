"""Sequence layers: ``keras.layers.RNN`` over each cell, as ``keras.layers.LSTM`` wraps its cell.

The layers take ``keras.layers.LSTM``'s arguments (the cell's, plus ``return_sequences``,
``return_state``, ``go_backwards``, ``stateful``, ``unroll``) and drive the backend's time
loop directly (:meth:`VariantRNN.inner_loop`). Each step goes through the cell's own
:meth:`~keras_lstm_variants.cells.base.RecurrentCell.gates` (input projection, then
``transition``), so the layers and ``keras.layers.RNN(cell)`` compute the same equations
(tests/test_layers.py proves it, forward and gradients).
"""

import functools
import inspect
import re

from keras import backend, layers, ops

from . import fast
from ._compat import rnn
from .cells import (
    CIFGLSTMCell,
    GreffLSTMCell,
    GRUCell,
    LSTMCell,
    MLSTMCell,
    PeepholeLSTMCell,
    SLSTMCell,
)
from .cells.base import register
from .cells.minimal import MinGRUCell, MinLSTMCell, scan_recurrence
from .cells.options import LSTM_OPTIONS


def _cell_arguments(cell_class):
    """Constructor argument names of ``cell_class`` and the cell classes it builds on."""
    names = set()
    for klass in cell_class.__mro__:
        if klass.__module__.startswith(__package__):
            names.update(inspect.signature(klass.__init__).parameters)
    return names - {"self", "kwargs", "units"}


def _from_cell(name):
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's ``{name}``.")


class _LSTMOptions:
    """The LSTM family's options (issue 9; keras_lstm_variants/cells/options.py), read-only."""

    layer_norm = _from_cell("layer_norm")
    norm_epsilon = _from_cell("norm_epsilon")
    proj_units = _from_cell("proj_units")
    proj_clip = _from_cell("proj_clip")
    cell_clip = _from_cell("cell_clip")
    zoneout = _from_cell("zoneout")


def _take_kernel_choice(layer, kwargs):
    """Take ``keras.layers.LSTM``/``GRU``'s kernel choices out of ``kwargs``, so a drop-in
    accepts the stock layer's arguments: ``implementation`` (1 or 2: the same equations either
    way) and ``use_cudnn`` ("auto" or False, returned: False keeps the layer off the fused
    kernels, PyTorch's on torch and TensorFlow's ``BlockLSTMV2``, see
    :func:`~keras_lstm_variants.fast.fused_supported` and
    :func:`~keras_lstm_variants.fast.block_supported`; never TensorFlow's cuDNN kernel)."""
    kind = type(layer).__name__
    implementation = kwargs.pop("implementation", 2)
    if implementation not in (1, 2):
        raise ValueError(f"{kind}: `implementation` must be 1 or 2; received {implementation!r}.")
    use_cudnn = kwargs.pop("use_cudnn", "auto")
    if use_cudnn not in ("auto", False):
        raise ValueError(
            f"{kind}: `use_cudnn` must be 'auto' or False; received {use_cudnn!r}. This layer "
            "never uses TensorFlow's cuDNN kernel (it runs under XLA and its exports run on any "
            f"device); for that kernel use keras.layers.{kind}."
        )
    return use_cudnn


class VariantRNN(layers.RNN):
    """Base of the sequence layers: builds ``cell_class`` from the arguments, runs the fast path."""

    cell_class = None
    #: True for the drop-ins for ``keras.layers.LSTM``/``GRU``, which take their kernel choices.
    drop_in = False

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
        use_cudnn = _take_kernel_choice(self, kwargs) if self.drop_in else False
        # The options are passed on even to cells without them, which then say so by name.
        accepted = _cell_arguments(self.cell_class) | set(LSTM_OPTIONS)
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
        #: "auto" (drop-ins, by default) or False; not saved, as in ``keras.layers.LSTM``.
        self.use_cudnn = use_cudnn

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
        if shape[1] == 0:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' needs at least one time step in `inputs`; "
                f"received shape {tuple(shape)}."
            )
        if self.cell.built:
            self.cell.check_features(shape)

    def build(self, sequences_shape, initial_state_shape=None):
        self._check_inputs(sequences_shape)
        super().build(sequences_shape, initial_state_shape)
        # A stateful layer's state variables hold float32 under a mixed policy. Keras's torch
        # Variable, read inside the call's autocast scope, is a cast copy, and `assign` writes
        # into that copy: the state would never be carried (keras.layers.LSTM too). Without
        # autocast the assignment reaches the variable; the call casts the states itself.
        for state in self.states if self.stateful and self.states else ():
            state._autocast = False

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
        for name, size, shape in zip(
            self.cell.state_names, self.state_size, state_shapes, strict=True
        ):
            shape = tuple(shape)
            if (
                len(shape) != 2
                or shape[1] != size
                or (None not in (batch, shape[0]) and shape[0] != batch)
            ):
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': `initial_state` {name} must have shape "
                    f"(batch={batch}, {size}); received shape {shape}."
                )

    def _check_mask(self, sequences_shape, mask):
        mask = mask[0] if isinstance(mask, (list, tuple)) else mask  # the sequences' mask first
        if mask is None:
            return
        shape, expected = tuple(mask.shape), tuple(sequences_shape[:2])
        if len(shape) != 2 or any(
            None not in (got, want) and got != want
            for got, want in zip(shape, expected, strict=True)
        ):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': `mask` must have shape (batch, time) = "
                f"{expected}; received shape {shape}."
            )

    def call(self, sequences, initial_state=None, mask=None, training=False):
        self._check_inputs(sequences.shape)
        if initial_state is not None:
            states = initial_state if isinstance(initial_state, (list, tuple)) else [initial_state]
            self._check_initial_state(sequences.shape, [state.shape for state in states])
        if mask is not None:
            self._check_mask(sequences.shape, mask)
            sequences = _zero_masked_steps(sequences, mask)
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        """Run :meth:`~keras_lstm_variants.cells.base.RecurrentCell.gates` over the time axis.

        Each step projects its own input (``W x_t + b``), then calls ``transition``. Projecting
        every step in one GEMM before the loop measured slower on CPU (README, "Speed": 1.15-2.1x
        the CPU time at the bench's default shape, train and inference, with and without XLA;
        1.0-1.35x in the long case): that projection is ``G * units / features`` times larger
        than the input (16x at the default shape), and the loop's transpose and per-step
        TensorArray copies of it cost more memory traffic than the small per-step GEMM saves.

        JAX training of the LSTM family takes :func:`keras_lstm_variants.fast.rnn` instead
        (the same steps, the weight gradients taken after the loop) where
        :func:`~keras_lstm_variants.fast.supported` allows, and on a GPU or TPU every cell of
        the LSTM family and the GRU take it, unrolled, in training and inference, where
        :func:`~keras_lstm_variants.fast.scan_supported` does; the torch backend, which runs op by
        op, takes :func:`~keras_lstm_variants.fast.eager_rnn` (one input GEMM, then a plain
        loop over ``transition``) where :func:`~keras_lstm_variants.fast.eager_supported` does,
        and the plain LSTM and GRU there run PyTorch's own kernels
        (:func:`~keras_lstm_variants.fast.torch_rnn`) where
        :func:`~keras_lstm_variants.fast.fused_supported` does. TensorFlow's inference at small
        batches without XLA runs its fused ``BlockLSTMV2`` for the LSTM and peephole LSTM
        (:func:`~keras_lstm_variants.fast.block_lstm`) where
        :func:`~keras_lstm_variants.fast.block_supported` allows.
        """
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        cell = self.cell
        after = fast.supported(self, sequences, training)
        if after or fast.scan_supported(self, sequences, training):
            go_backwards, zeros = self.go_backwards, self.zero_output_for_mask
            return fast.rnn(
                cell, sequences, initial_state, mask, go_backwards, zeros, training, after
            )
        if fast.fused_supported(self, sequences, mask, training):
            backwards, every = self.go_backwards, self.return_sequences
            return fast.torch_rnn(cell, sequences, initial_state, backwards, every)
        if fast.block_supported(self, sequences, mask, training):
            backwards, every = self.go_backwards, self.return_sequences
            loop = functools.partial(self._keras_loop, sequences, initial_state, mask, training)
            return fast.block_lstm(cell, sequences, initial_state, backwards, every, loop)
        if fast.eager_supported(self, sequences, mask, training):
            backwards, every = self.go_backwards, self.return_sequences
            return fast.eager_rnn(cell, sequences, initial_state, backwards, every, training)
        return self._keras_loop(sequences, initial_state, mask, training)

    def _keras_loop(self, sequences, initial_state, mask, training=False):
        """Keras's time loop (the backend's ``rnn``) over the cell's ``gates``."""
        cell = self.cell
        # Zoneout in training: every step's masks drawn here, before the loop, and fed to the
        # steps with the inputs, so each step has its own on every backend (JAX's scan traces
        # the step once: a draw inside it would repeat one mask at every step).
        # (A flat tuple: Keras's unrolled loop does not take deeper nesting.)
        zoneout_masks = (cell.zoneout_masks(sequences) if training else None) or {}

        def step(inputs_t, states):
            x_t, *masks_t = inputs_t if zoneout_masks else (inputs_t,)
            masks_t = dict(zip(zoneout_masks, masks_t, strict=True))
            _, new_states = cell.gates(x_t, list(states), training, zoneout_masks=masks_t)
            return new_states[0], new_states

        return rnn(
            step,
            (sequences, *zoneout_masks.values()) if zoneout_masks else sequences,
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
class LSTM(_LSTMOptions, VariantRNN):
    __doc__ = (
        "The vanilla LSTM over a sequence; a drop-in for ``keras.layers.LSTM`` (same arguments"
        " and weights, never TensorFlow's cuDNN-only kernel, so it runs under XLA and exports"
        " anywhere; on the torch backend it runs PyTorch's own LSTM kernel where it computes the"
        " same thing: :func:`~keras_lstm_variants.fast.fused_supported`)."
        + _LAYER_ARGS.format(cell="LSTMCell")
    )
    cell_class = LSTMCell
    drop_in = True
    unit_forget_bias = _from_cell("unit_forget_bias")


@register
class PeepholeLSTM(_LSTMOptions, VariantRNN):
    __doc__ = "An LSTM with peephole connections over a sequence." + _LAYER_ARGS.format(
        cell="PeepholeLSTMCell"
    )
    cell_class = PeepholeLSTMCell
    unit_forget_bias = _from_cell("unit_forget_bias")
    peepholes = _from_cell("peepholes")


@register
class CIFGLSTM(_LSTMOptions, VariantRNN):
    __doc__ = "An LSTM with coupled input and forget gates over a sequence." + _LAYER_ARGS.format(
        cell="CIFGLSTMCell"
    )
    cell_class = CIFGLSTMCell
    unit_forget_bias = _from_cell("unit_forget_bias")
    peepholes = _from_cell("peepholes")


@register
class GreffLSTM(_LSTMOptions, VariantRNN):
    __doc__ = (
        "One of Greff et al.'s nine LSTM configurations over a sequence (``variant``: V, NIG, "
        "NFG, NOG, NIAF, NOAF, NP, CIFG or FGR)." + _LAYER_ARGS.format(cell="GreffLSTMCell")
    )
    cell_class = GreffLSTMCell
    variant = _from_cell("variant")
    unit_forget_bias = _from_cell("unit_forget_bias")
    peepholes = _from_cell("peepholes")

    def __init__(self, units, variant="V", **kwargs):
        # `variant` second, as in GreffLSTMCell: GreffLSTM(64, "NIG") must not read "NIG" as
        # return_sequences.
        super().__init__(units, variant=variant, **kwargs)


@register
class GRU(VariantRNN):
    __doc__ = (
        "The GRU over a sequence; the arguments and weights of ``keras.layers.GRU`` (on the"
        " torch backend it runs PyTorch's own GRU kernel where it computes the same thing:"
        " :func:`~keras_lstm_variants.fast.fused_supported`)." + _LAYER_ARGS.format(cell="GRUCell")
    )
    cell_class = GRUCell
    drop_in = True
    reset_after = _from_cell("reset_after")
    layer_norm = _from_cell("layer_norm")
    norm_epsilon = _from_cell("norm_epsilon")
    zoneout = _from_cell("zoneout")


class MinimalRNN(VariantRNN):
    """Base of :class:`MinGRU` and :class:`MinLSTM`: the whole sequence at once.

    :meth:`inner_loop` projects every step's input in one product (``cell.project``), turns
    it into the recurrence's coefficients (``cell.coefficients``) and runs the scan
    (:func:`~keras_lstm_variants.cells.minimal.scan_recurrence`), instead of stepping the cell;
    tests/test_minimal.py proves it equal to stepping the cell's ``transition``. Masked steps
    keep the state; outputs at masked steps, ``go_backwards`` (outputs in processing order),
    ``initial_state`` and ``stateful`` follow ``keras.layers.RNN``. With an unknown number of
    steps (e.g. a SavedModel signature with a free time axis) it steps the cell instead. Under
    a 16-bit dtype policy the scan runs in float32.
    """

    def __init__(self, units, unroll=False, **kwargs):
        self.cell_class.reject_unsupported(kwargs)
        if unroll:
            raise ValueError(
                f"{type(self).__name__} does not take `unroll` (received unroll={unroll!r}): it "
                "computes the sequence with a scan, not a time loop."
            )
        super().__init__(units, **kwargs)

    log_space = _from_cell("log_space")

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if sequences.shape[1] is None:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        if self.go_backwards:
            sequences = ops.flip(sequences, axis=1)
            mask = None if mask is None else ops.flip(mask, axis=1)
        cell = self.cell
        (h_0,) = initial_state
        z_x = cell.project(sequences, training)
        if cell.compute_dtype in ("float16", "bfloat16"):
            z_x, h_0 = ops.cast(z_x, "float32"), ops.cast(h_0, "float32")
        _, a, b = cell.coefficients(z_x)
        h = scan_recurrence(a, b, h_0, mask=mask)
        outputs = h
        if mask is not None:
            # The backend's time loop at a masked step outputs zeros (zero_output_for_mask),
            # else the previous output: on TensorFlow and torch zeros before the first
            # unmasked step, on JAX the carried state (h_0 there), i.e. h itself.
            shown = ops.cast(mask, "bool")
            if not self.zero_output_for_mask:
                shown = ops.cumsum(ops.cast(mask, "int32"), axis=1) > 0
            if self.zero_output_for_mask or backend.backend() != "jax":
                outputs = ops.where(ops.expand_dims(shown, -1), h, ops.zeros_like(h))
        last_output = outputs[:, -1]
        if not self.return_sequences:
            outputs = ops.expand_dims(last_output, 1)
        return last_output, outputs, [h[:, -1]]


@register
class MinGRU(MinimalRNN):
    __doc__ = (
        "minGRU (Feng et al. 2024) over a sequence, computed with a scan (see "
        ":class:`MinimalRNN`); ``unroll`` is not taken." + _LAYER_ARGS.format(cell="MinGRUCell")
    )
    cell_class = MinGRUCell


@register
class MinLSTM(MinimalRNN):
    __doc__ = (
        "minLSTM (Feng et al. 2024) over a sequence, computed with a scan (see "
        ":class:`MinimalRNN`); ``unroll`` is not taken." + _LAYER_ARGS.format(cell="MinLSTMCell")
    )
    cell_class = MinLSTMCell


@register
class SLSTM(VariantRNN):
    __doc__ = (
        "xLSTM's sLSTM over a sequence (Beck et al. 2024): exponential input gate, normalizer "
        "and stabilizer, memory mixing within ``num_heads`` heads."
        + _LAYER_ARGS.format(cell="SLSTMCell")
    )
    cell_class = SLSTMCell
    num_heads = _from_cell("num_heads")
    forget_activation = _from_cell("forget_activation")


@register
class MLSTM(VariantRNN):
    """xLSTM's mLSTM over a sequence (Beck et al. 2024), in the paper's parallel form.

    The :class:`MLSTMCell` step is the definition; with ``parallel=True`` (the default) the
    layer computes all steps at once with :meth:`MLSTMCell.parallel` (one GEMM for the
    projections, then ``(time, time)`` products per head: memory grows with ``time**2``),
    proven equal to stepping the cell (outputs, final state, gradients, masks, initial
    states; tests/test_xlstm.py). ``parallel=False`` steps the cell like the other layers.

    Args:
        units: output size (``num_heads * d``).
        parallel: all steps at once (``True``) or one step at a time (``False``).
        return_sequences, return_state, go_backwards, stateful: as ``keras.layers.LSTM``.
        unroll: only with ``parallel=False`` (the parallel form has no loop to unroll).
        **kwargs: the cell's arguments (see :class:`MLSTMCell`) and ``keras.layers.Layer``'s.
    """

    cell_class = MLSTMCell
    num_heads = _from_cell("num_heads")
    forget_activation = _from_cell("forget_activation")

    def __init__(self, units, parallel=True, **kwargs):
        if not isinstance(parallel, bool):
            raise ValueError(f"Argument `parallel` must be True or False; received {parallel!r}.")
        if parallel and kwargs.get("unroll"):
            raise ValueError(
                "Argument `unroll=True` needs parallel=False: the parallel form has no loop."
            )
        super().__init__(units, **kwargs)
        self.parallel = parallel

    def inner_loop(self, sequences, initial_state, mask, training=False):
        """The parallel form, returning what Keras's time loop returns for the same input:
        ``(last_output, outputs, new_states)``, outputs in processing order."""
        if not self.parallel:
            return super().inner_loop(sequences, initial_state, mask, training)
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if self.go_backwards:
            sequences = ops.flip(sequences, axis=1)
            mask = None if mask is None else ops.flip(mask, axis=1)
        if mask is not None:
            mask = ops.cast(mask, "bool")
        initial_state = list(initial_state)
        z = self.cell.project_sequence(sequences, training)
        h, memory = self.cell.parallel(z, initial_state, mask)
        if mask is None:
            outputs, h_last = h, h[:, -1]
        else:
            outputs, h_last = _masked_outputs(h, initial_state[0], mask, self.zero_output_for_mask)
        return outputs[:, -1], outputs, [h_last, *memory]

    def get_config(self):
        return {**super().get_config(), "parallel": self.parallel}


def _zero_masked_steps(sequences, mask):
    """``sequences`` with zeros at the steps ``mask`` hides, so that what a masked step holds
    (NaN, inf) never enters the arithmetic of any kernel, gradients included: masking after a
    product is not enough, ``NaN * 0`` is NaN."""
    mask = mask[0] if isinstance(mask, (list, tuple)) else mask
    keep = ops.expand_dims(ops.cast(mask, "bool"), -1)
    return ops.where(keep, sequences, ops.zeros_like(sequences))


def _masked_outputs(h, h_0, mask, zero_output_for_mask):
    """Outputs and the final ``h`` state under ``mask``, by the rule of Keras's time loop.

    A masked step carries the state over, so the ``h`` state after step ``t`` is ``h`` of the
    latest unmasked step ``s <= t`` (``h_0`` if none). The output there is zero with
    ``zero_output_for_mask``; otherwise the previous output: that latest ``h``, or before any
    unmasked step ``h_0`` on JAX (whose loop emits the carried state) and zeros on the other
    backends (whose loops start from a zero output). The latest ``h`` is gathered (exact, and
    only unmasked steps are read), never a weighted sum over the steps, in which a masked
    step's value would enter as ``0 * value``.
    """
    steps = ops.arange(ops.shape(h)[1])
    count = ops.cumsum(ops.cast(mask, "int32"), axis=1)  # unmasked steps so far
    causal = ops.expand_dims(steps, 0) <= ops.expand_dims(steps, 1)  # (t, s): s <= t
    seen = causal[None] & ops.expand_dims(mask, 1)  # (batch, t, s): s <= t and unmasked
    latest = ops.max(ops.where(seen, steps, ops.zeros_like(steps)), axis=-1)  # (batch, t)
    # A gather from the (batch * time, units) rows: ONNX's Gather on every exporter.
    batch, time = ops.shape(h)[0], ops.shape(h)[1]
    rows = latest + ops.expand_dims(ops.arange(batch) * time, 1)
    carried = ops.take(ops.reshape(h, (-1, ops.shape(h)[2])), rows, axis=0)
    h = ops.where(ops.expand_dims(mask, -1), h, ops.zeros_like(h))
    started = ops.expand_dims(count > 0, -1)
    h_last = ops.where(started[:, -1], carried[:, -1], h_0)
    if zero_output_for_mask:
        return h, h_last
    before = h_0 if backend.backend() == "jax" else ops.zeros_like(h_0)
    return ops.where(started, carried, ops.expand_dims(before, 1)), h_last

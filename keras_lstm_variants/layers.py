"""Sequence layers: ``keras.layers.RNN`` over each cell, as ``keras.layers.LSTM`` wraps its cell.

The layers take ``keras.layers.LSTM``'s arguments (the cell's, plus ``return_sequences``,
``return_state``, ``go_backwards``, ``stateful``, ``unroll``), plus ``loop``, and run the
cell over time with a kernel (:mod:`keras_lstm_variants.kernels`, from
:meth:`VariantRNN.inner_loop`). Keras's loop, the fallback, steps the cell's own
:meth:`~keras_lstm_variants.cells.base.RecurrentCell.gates` (input projection, then
``transition``), so the layers and ``keras.layers.RNN(cell)`` compute the same equations
(tests/test_layers.py proves it, forward and gradients); every other kernel is proven equal
to it.
"""

import inspect
import re

import keras
from keras import layers, ops

from . import kernels
from .cells import (
    CIFGLSTMCell,
    GreffLSTMCell,
    GRUCell,
    LSTMCell,
    MLSTMCell,
    PeepholeLSTMCell,
    SLSTMCell,
)
from .cells.base import refusal, register
from .cells.minimal import MinGRUCell, MinLSTMCell
from .cells.options import check_flag


def _stock_order(stock_class):
    """``stock_class``'s (``keras.layers.LSTM``'s or ``GRU``'s) positional arguments after
    ``units``, in its order, as the installed Keras declares them."""
    parameters = list(inspect.signature(stock_class.__init__).parameters.values())[2:]
    return tuple(p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD)


#: The stock layers, by the registry's ``stock`` name, and their positional order (after
#: ``units``).
STOCK_LAYERS = {"LSTM": layers.LSTM, "GRU": layers.GRU}
STOCK_ORDER = {name: _stock_order(layer) for name, layer in STOCK_LAYERS.items()}


def _defaults(function):
    return {
        p.name: p.default
        for p in inspect.signature(function).parameters.values()
        if p.default is not p.empty
    }


#: The arguments a sequence layer takes itself (the others go to its cell).
LAYER_ARGUMENTS = (
    "activity_regularizer",
    "return_sequences",
    "return_state",
    "go_backwards",
    "stateful",
    "unroll",
)
#: Layer arguments that must be True or False.
LAYER_FLAGS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll")


def _leading_arguments(cell_class, stock_order):
    """The cell's own leading positional arguments: those of its constructor, after ``units``,
    before the first one the stock layer shares (e.g. PeepholeLSTMCell's ``peepholes``,
    GreffLSTMCell's ``variant``, SLSTMCell's ``num_heads``, ``forget_activation``)."""
    for klass in cell_class.__mro__:
        if "__init__" in klass.__dict__:
            break
    leading = []
    for parameter in list(inspect.signature(klass.__init__).parameters.values())[2:]:
        if parameter.kind is not parameter.POSITIONAL_OR_KEYWORD or parameter.name in stock_order:
            break
        leading.append(parameter.name)
    return tuple(leading)


def _from_cell(name):
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's ``{name}``.")


def _take_kernel_choice(layer, kwargs):
    """Take ``keras.layers.LSTM``/``GRU``'s kernel choices out of ``kwargs``, so a drop-in
    accepts the stock layer's arguments: ``implementation`` (1 or 2: the same equations either
    way) and ``use_cudnn`` ("auto" or False, returned: False keeps the layer off the fused
    kernels, PyTorch's on torch and TensorFlow's ``BlockLSTMV2``, see
    :mod:`keras_lstm_variants.kernels`; never TensorFlow's cuDNN kernel)."""
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


class _ConstructorSignature:
    """``inspect.signature(Layer)``: the constructor as :meth:`VariantRNN.signature` binds it.
    On an instance it is absent, so ``inspect.signature(layer)`` (``tf.function``, Keras) reads
    the layer's ``__call__``."""

    def __get__(self, instance, owner):
        if instance is not None:
            raise AttributeError("__signature__")
        return owner.signature()


class VariantRNN(layers.RNN):
    """Base of the sequence layers: builds ``cell_class`` from the arguments, runs it over time
    with a kernel (``loop``: "auto", "keras" or a kernel's name, see
    :mod:`keras_lstm_variants.kernels`).

    Positional arguments (:meth:`positional_arguments`): ``units``, the cell's own leading
    ones (e.g. ``peepholes``, ``variant``, ``num_heads``), then ``keras.layers.LSTM``'s (or
    ``GRU``'s, by the variant's ``stock`` in the registry) order for the arguments the layer
    takes; any other argument by keyword. Every constructor argument of the cell is also a
    read-only attribute of the layer (the cell's value).
    """

    cell_class = None
    __signature__ = _ConstructorSignature()
    #: True for the drop-ins for ``keras.layers.LSTM``/``GRU``, which take their kernel choices.
    drop_in = False

    def __init__(self, units, *args, loop="auto", **kwargs):
        loop = kernels.check_loop(loop, type(self).__name__)
        kwargs = self.bind_arguments(args, kwargs)
        use_cudnn = _take_kernel_choice(self, kwargs) if self.drop_in else False
        for name in LAYER_FLAGS:
            if name in kwargs:
                kwargs[name] = check_flag(name, kwargs[name])
        cell_class = self.cell_class
        # Refused arguments go on to the cell, which names them.
        accepted = cell_class.arguments() | set(cell_class.refused_arguments)
        cell_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in accepted}
        cell_name = re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", cell_class.__name__).lower()
        cell = cell_class(
            units,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name=cell_name,
            **cell_kwargs,
        )
        super().__init__(cell, **kwargs)
        #: "auto" (drop-ins, by default) or False; not saved, as in ``keras.layers.LSTM``.
        self.use_cudnn = use_cudnn
        #: Which kernel runs the time loop (:mod:`keras_lstm_variants.kernels`): "auto" (the
        #: first that can), "keras" (Keras's own loop) or a kernel's name (raises its reason
        #: when it cannot run); saved in the config.
        self.loop = loop

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.cell_class is None:
            return
        # The cell's arguments and what gives its weights their meaning, read-only on the
        # layer (as keras.layers.LSTM's properties).
        cell_class = cls.cell_class
        names = {"units"} | (cell_class.arguments() - set(cell_class.refused_arguments))
        for name in sorted(names | set(cell_class.layout_keys)):
            if not hasattr(cls, name):
                setattr(cls, name, _from_cell(name))

    @classmethod
    def positional_arguments(cls):
        """The names the positional arguments after ``units`` bind to, in order."""
        if "_positional" not in cls.__dict__:
            from . import registry  # the registry imports the layers

            stocks = [record.stock for record in registry.records() if record.layer is cls]
            order = STOCK_ORDER[stocks[0] if stocks else "LSTM"]
            cell_class = cls.cell_class
            leading = _leading_arguments(cell_class, order)
            takes = (cell_class.arguments() - set(cell_class.refused_arguments)) | set(
                LAYER_ARGUMENTS
            )
            if cls.drop_in:  # the stock layers' kernel choice, last
                takes.add("use_cudnn")
            shared = tuple(name for name in order if name in takes and name not in leading)
            cls._positional = (*leading, *shared)
        return cls._positional

    @classmethod
    def signature(cls):
        """The constructor's signature as :meth:`positional_arguments` binds it (``units``,
        the positional names with their defaults, then ``**kwargs``), for ``help`` and docs."""
        defaults = {}
        for source in (STOCK_LAYERS[name] for name in STOCK_ORDER):
            defaults.update(_defaults(source.__init__))
        for klass in reversed(cls.cell_class.__mro__):
            if "__init__" in klass.__dict__:
                defaults.update(_defaults(klass.__init__))
        Parameter = inspect.Parameter
        parameters = [Parameter("units", Parameter.POSITIONAL_OR_KEYWORD)]
        for name in cls.positional_arguments():
            parameters.append(
                Parameter(name, Parameter.POSITIONAL_OR_KEYWORD, default=defaults.get(name))
            )
        parameters.append(Parameter("loop", Parameter.KEYWORD_ONLY, default="auto"))
        parameters.append(Parameter("kwargs", Parameter.VAR_KEYWORD))
        return inspect.Signature(parameters)

    def bind_arguments(self, args, kwargs):
        """``kwargs`` with the positional ``args`` (after ``units``) bound by name."""
        names = self.positional_arguments()
        kind = type(self).__name__
        if len(args) > len(names):
            raise TypeError(
                f"{kind} takes at most {len(names) + 1} positional arguments (units, "
                f"{', '.join(names)}); received {len(args) + 1}."
            )
        kwargs = dict(kwargs)
        for name, value in zip(names, args, strict=False):
            if name in kwargs:
                raise TypeError(f"{kind} got multiple values for argument `{name}`.")
            kwargs[name] = value
        return kwargs

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
        """Run the cell over the time axis with the kernel :mod:`keras_lstm_variants.kernels`
        chooses for this call and the layer's ``loop`` (``"auto"``: the first that can run;
        Keras's own loop, stepping the cell's ``gates``, always can). Active
        :func:`~keras_lstm_variants.kernels.observing` observers see the call first (gate
        tracing's hook). :func:`~keras_lstm_variants.explain_kernels` says which kernel runs
        and why not the others."""
        return kernels.run(self, kernels.record(self, sequences, initial_state, mask, training))

    def get_config(self):
        config = super().get_config()
        cell_config = dict(config.pop("cell")["config"])
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        return {**config, **cell_config, "loop": self.loop}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


_LAYER_ARGS = """
    Args:
        units: dimensionality of the output and of each state.
        return_sequences, return_state, go_backwards, stateful, unroll: as ``keras.layers.LSTM``.
        loop: keyword-only; the time loop's kernel: "auto", "keras" or a kernel's name.
        **kwargs: the cell's arguments (see :class:`{cell}`) and ``keras.layers.Layer``'s.

    Positional arguments: ``units``, the cell's own leading ones, then ``keras.layers.LSTM``'s
    (``GRU``'s for a GRU-type variant) order for those the layer takes
    (:meth:`VariantRNN.positional_arguments`); the cell's arguments are read-only attributes.
"""


@register
class LSTM(VariantRNN):
    __doc__ = (
        "The vanilla LSTM over a sequence; a drop-in for ``keras.layers.LSTM`` (same arguments"
        " and weights, never TensorFlow's cuDNN-only kernel, so it runs under XLA and exports"
        " anywhere; on the torch backend it runs PyTorch's own LSTM kernel where it computes the"
        " same thing: :mod:`keras_lstm_variants.kernels`, ``torch-fused``)."
        + _LAYER_ARGS.format(cell="LSTMCell")
    )
    cell_class = LSTMCell
    drop_in = True


@register
class PeepholeLSTM(VariantRNN):
    __doc__ = "An LSTM with peephole connections over a sequence." + _LAYER_ARGS.format(
        cell="PeepholeLSTMCell"
    )
    cell_class = PeepholeLSTMCell


@register
class CIFGLSTM(VariantRNN):
    __doc__ = "An LSTM with coupled input and forget gates over a sequence." + _LAYER_ARGS.format(
        cell="CIFGLSTMCell"
    )
    cell_class = CIFGLSTMCell


@register
class GreffLSTM(VariantRNN):
    __doc__ = (
        "One of Greff et al.'s nine LSTM configurations over a sequence (``variant``: V, NIG, "
        "NFG, NOG, NIAF, NOAF, NP, CIFG or FGR)." + _LAYER_ARGS.format(cell="GreffLSTMCell")
    )
    cell_class = GreffLSTMCell


@register
class GRU(VariantRNN):
    __doc__ = (
        "The GRU over a sequence; the arguments and weights of ``keras.layers.GRU`` (on the"
        " torch backend it runs PyTorch's own GRU kernel where it computes the same thing:"
        " :mod:`keras_lstm_variants.kernels`, ``torch-fused``)."
        + _LAYER_ARGS.format(cell="GRUCell")
    )
    cell_class = GRUCell
    drop_in = True


class MinimalRNN(VariantRNN):
    """Base of :class:`MinGRU` and :class:`MinLSTM`: the whole sequence at once.

    Its ``min-scan`` kernel (:mod:`keras_lstm_variants.kernels.min_scan`) projects every
    step's input in one product (``cell.project``), turns
    it into the recurrence's coefficients (``cell.coefficients``) and runs the scan
    (:func:`~keras_lstm_variants.cells.minimal.scan_recurrence`), instead of stepping the cell;
    tests/test_minimal.py proves it equal to stepping the cell's ``transition``. Masked steps
    keep the state; outputs at masked steps, ``go_backwards`` (outputs in processing order),
    ``initial_state`` and ``stateful`` follow ``keras.layers.RNN``. With an unknown number of
    steps (e.g. a SavedModel signature with a free time axis) it steps the cell instead. Under
    a 16-bit dtype policy the scan runs in float32.
    """

    def __init__(self, units, *args, **kwargs):
        kwargs = self.bind_arguments(args, kwargs)
        if kwargs.get("unroll"):
            why = "it computes the sequence with a scan, not a time loop"
            raise ValueError(refusal(self, "unroll", kwargs["unroll"], why))
        super().__init__(units, **kwargs)


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

    def __init__(self, units, *args, parallel=True, **kwargs):
        kwargs = self.bind_arguments(args, kwargs)
        parallel = check_flag("parallel", parallel)
        if parallel and kwargs.get("unroll"):
            raise ValueError(
                "Argument `unroll=True` needs parallel=False: the parallel form has no loop."
            )
        super().__init__(units, **kwargs)
        self.parallel = parallel

    def get_config(self):
        return {**super().get_config(), "parallel": self.parallel}


def sequence_layer(cell_class, name=None, package=None, doc=None):
    """A sequence layer class over ``cell_class``: a :class:`VariantRNN` with nothing of its
    own (what :func:`keras_lstm_variants.registry.add` builds when given no layer).

    ``name``: the class name (default: the cell's less ``Cell``); ``package``: the ``.keras``
    package it is registered under (default: the cell's registered package, else its module).

    >>> import keras, keras_lstm_variants as klv
    >>> Layer = sequence_layer(klv.PeepholeLSTMCell, name="MyPeephole", package="doctest")
    >>> tuple(Layer(4, ("forget",))(keras.random.normal((2, 5, 3))).shape)
    (2, 4)
    """
    name = name or cell_class.__name__.removesuffix("Cell")
    registered = keras.saving.get_registered_name(cell_class)
    package = package or (registered.split(">")[0] if ">" in registered else cell_class.__module__)
    namespace = {
        "cell_class": cell_class,
        "__module__": cell_class.__module__,
        "__doc__": doc
        or f"{name}: :class:`{cell_class.__name__}` over a sequence."
        + _LAYER_ARGS.format(cell=cell_class.__name__),
    }
    layer = type(name, (VariantRNN,), namespace)
    return keras.saving.register_keras_serializable(package=package)(layer)


def _zero_masked_steps(sequences, mask):
    """``sequences`` with zeros at the steps ``mask`` hides, so that what a masked step holds
    (NaN, inf) never enters the arithmetic of any kernel, gradients included: masking after a
    product is not enough, ``NaN * 0`` is NaN."""
    mask = mask[0] if isinstance(mask, (list, tuple)) else mask
    keep = ops.expand_dims(ops.cast(mask, "bool"), -1)
    return ops.where(keep, sequences, ops.zeros_like(sequences))

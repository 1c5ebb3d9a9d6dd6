"""The base every cell shares: arguments, fused weights, dropout masks, state and config.

A variant declares its fused gate ``blocks`` (the column blocks of ``kernel``, in order) and
implements one public method, :meth:`RecurrentCell.transition`, which turns the input
projection ``W x + b`` and the previous state into the named gates and the new state. ``call``,
the sequence layers, gate tracing and streaming export all go through that one method, so the
equations live in exactly one place.
"""

import inspect
import json
import numbers
from typing import ClassVar

import keras
import numpy as np
from keras import activations, constraints, initializers, ops, regularizers

from .._compat import DropoutRNNCell
from .options import check_flag, layer_normalize, zone_out

#: Capabilities a cell class may declare (:attr:`RecurrentCell.capabilities`); kernels and
#: export read them, never a list of classes.
#: The recurrent product ``recurrent_input(h) @ recurrent_kernel`` enters the pre-activation
#: unchanged (added to ``project(x)``): a kernel may take the weight gradients after the loop.
ADDITIVE_RECURRENCE = "additive-recurrence"
#: One step is ``transition(project(x_t), states)``, ``project`` row-wise: a kernel may project
#: every step's input in one product before the loop.
SEPARABLE_INPUT = "separable-input"
#: The weights map onto PyTorch's ``torch.nn.LSTM`` / ``torch.nn.GRU`` (reset after).
TORCH_LSTM = "torch-lstm"
TORCH_GRU = "torch-gru"
#: The weights map onto TensorFlow's fused ``BlockLSTMV2`` (peepholes included).
TF_BLOCK_LSTM = "tf-block-lstm"
#: The weights map onto ONNX's ``LSTM`` (peepholes ``P``, coupled gates) / ``GRU`` operators.
ONNX_LSTM = "onnx-lstm"
ONNX_GRU = "onnx-gru"

#: Registers a class for ``.keras`` saving under the package name.
register = keras.saving.register_keras_serializable(package="keras_lstm_variants")


def check_units(units):
    """Return ``units`` as an int, or raise naming the argument."""
    if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units <= 0:
        raise ValueError(f"Argument `units` must be a positive integer; received units={units!r}.")
    return int(units)


def refusal(owner, name, value, why):
    """The one message for an argument a cell or layer does not take: ``owner`` (a class or
    instance) does not take `name` (received ``value``): ``why``."""
    kind = owner if isinstance(owner, type) else type(owner)
    return f"{kind.__name__} does not take `{name}` (received {name}={value!r}): {why}."


def _bind(cls, args, kwargs):
    """The constructor's arguments by name (positional ones bound to ``cls.__init__``'s)."""
    arguments = dict(kwargs)
    if args:
        parameters = [
            p.name
            for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        arguments.update(zip(parameters, args, strict=False))
    return arguments


def _registry():
    from .. import registry  # the registry imports the cells: look it up when needed

    return registry


def check_rate(name, rate):
    """Return a dropout rate in [0, 1) as a float, or raise naming the argument."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
        raise ValueError(f"Argument `{name}` must be a float in [0, 1); received {name}={rate!r}.")
    return float(rate)


class RecurrentCell(keras.layers.Layer, DropoutRNNCell):
    """Base class of the cells; not used directly.

    Subclasses set ``blocks`` (names of the fused kernel's column blocks, in order),
    ``gate_names`` (what :meth:`transition` reports) and ``state_names``, and implement
    :meth:`transition`. Weights follow ``keras.layers.LSTMCell``'s layout: ``kernel``
    ``(input_dim, len(blocks) * units)``, ``recurrent_kernel`` ``(units, len(blocks) * units)``,
    ``bias``.
    """

    blocks = ()
    gate_names = ()
    state_names = ("h",)
    #: Each gate's range ``{gate: (low, high)}`` (``None``: open) where it is not the range of
    #: the activation that makes it (``candidate``: ``activation``; others:
    #: ``recurrent_activation``); read by the gate statistics.
    gate_ranges: ClassVar[dict] = {}
    #: What a saturated gate means: ``{gate: (short left, long left, short right, long
    #: right)}``, "left" near the lower bound; read by the gate statistics (a gate without an
    #: entry gets a generic "low"/"high").
    gate_meanings: ClassVar[dict] = {}
    #: Arguments of the other cells that this one does not take: ``{name: why}``. Passing one
    #: raises ``ValueError`` (:func:`refusal`'s message) before anything is built, from the
    #: cell and from its sequence layer; they are left out of ``get_config``.
    refused_arguments: ClassVar[dict] = {}
    #: Attributes that change what the weights mean (which gate a peephole vector feeds, a
    #: projection, the variant, an activation that changes the math ...): recorded with the
    #: weights together with the class (:meth:`layout`) and checked when they are loaded.
    #: Regularizers and bounds (dropout, zoneout, clips) are not: the weights keep their roles.
    layout_keys: ClassVar[tuple] = ("activation", "recurrent_activation")
    #: What kernels and export may rely on: a set of this module's capability constants,
    #: declared by each class for its own step; instance options (layer norm, ...) are checked
    #: by the kernels on top of it.
    capabilities: ClassVar[frozenset] = frozenset()
    #: The methods that define the step's math. A subclass that overrides one of them without
    #: declaring its own ``capabilities`` loses the inherited ones: kernels then step it.
    step_methods: ClassVar[tuple] = ("project", "transition")
    #: zoneout probability per state name (cells with a ``zoneout`` argument set it).
    zoneout_rates: ClassVar[dict] = {}

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_units(units)
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = check_flag("use_bias", use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.dropout = check_rate("dropout", dropout)
        self.recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.state_size = [self.units] * len(self.state_names)
        self.output_size = self.units

    def __new__(cls, *args, **kwargs):
        cls.check_refused(_bind(cls, args, kwargs))
        return super().__new__(cls, *args, **kwargs)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        overrides_step = any(name in cls.__dict__ for name in cls.step_methods)
        if overrides_step and "capabilities" not in cls.__dict__:
            cls.capabilities = frozenset()

    @classmethod
    def refusals(cls, arguments):
        """``{name: why}`` for each of ``arguments`` (constructor arguments by name) this cell
        refuses: :attr:`refused_arguments`; a cell whose refusals depend on another argument
        (e.g. a variant without peepholes) extends this."""
        return {name: why for name, why in cls.refused_arguments.items() if name in arguments}

    @classmethod
    def check_refused(cls, arguments):
        """Raise ``ValueError`` naming the first argument in ``arguments`` this cell refuses."""
        for name, why in cls.refusals(arguments).items():
            takers = [
                record.cell.__name__
                for record in _registry().records()
                if name in record.cell.arguments() and name not in record.cell.refused_arguments
            ]
            if takers:
                why = f"{why} ({', '.join(takers)} take it)"
            raise ValueError(refusal(cls, name, arguments[name], why))

    @classmethod
    def arguments(cls):
        """The constructor's argument names, those of the classes it builds on included."""
        names = set()
        for klass in cls.__mro__:
            if issubclass(klass, RecurrentCell) and "__init__" in klass.__dict__:
                names.update(inspect.signature(klass.__init__).parameters)
        return names - {"self", "kwargs", "units"}

    # ----------------------------------------------------------------- weights
    @property
    def kernel_width(self):
        """Columns of ``kernel``: one ``units``-wide block per entry of ``blocks``."""
        return len(self.blocks) * self.units

    @property
    def recurrent_kernel_shape(self):
        """Shape of ``recurrent_kernel``; ``None``: the cell has none."""
        return (self.state_size[0], self.kernel_width)  # h's width: ``units`` or a projection's

    @property
    def bias_shape(self):
        return (self.kernel_width,)

    def build_bias_initializer(self):
        """The initializer ``bias`` is created with (subclasses add e.g. unit_forget_bias)."""
        return self.bias_initializer

    def add_kind_weight(self, name, shape, kind, initializer=None):
        """A weight with the cell's ``<kind>_initializer``/``_regularizer``/``_constraint``."""
        return self.add_weight(
            shape=shape,
            name=name,
            initializer=initializer or getattr(self, f"{kind}_initializer"),
            regularizer=getattr(self, f"{kind}_regularizer"),
            constraint=getattr(self, f"{kind}_constraint"),
        )

    def check_step_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                f"{type(self).__name__} expects one time step of `inputs` shaped "
                f"(batch, features); received shape {tuple(input_shape)}."
            )

    def build(self, input_shape):
        """``kernel`` ``(features, kernel_width)``, ``recurrent_kernel``
        (:attr:`recurrent_kernel_shape`, unless ``None``), ``bias`` (:attr:`bias_shape`, with
        :meth:`build_bias_initializer`), then the cell's own weights (:meth:`build_more`)."""
        self.check_step_shape(input_shape)
        self.kernel = self.add_kind_weight("kernel", (input_shape[-1], self.kernel_width), "kernel")
        shape = self.recurrent_kernel_shape
        self.recurrent_kernel = None
        if shape is not None:
            self.recurrent_kernel = self.add_kind_weight("recurrent_kernel", shape, "recurrent")
        self.bias = None
        if self.use_bias:
            initializer = self.build_bias_initializer()
            self.bias = self.add_kind_weight("bias", self.bias_shape, "bias", initializer)
        self.build_more(input_shape)

    def build_more(self, input_shape):
        """Hook: the weights that follow ``bias`` (peepholes, norms, projection ...)."""

    def normalize(self, z, norm):
        """Layer norm of ``z`` with ``norm`` = (gamma, beta), e.g. ``self.kernel_norm``."""
        return layer_normalize(z, *norm, self.norm_epsilon)

    def flops_per_step(self, batch):
        """Flops of one step's products at ``batch``: ``2 B`` times the size of every weight
        matrix (each is one product per step); cells whose products differ override it."""
        sizes = [
            int(np.prod(w.shape))
            for w in self.trainable_weights
            if len(w.shape) == 2 and "bias" not in w.name
        ]
        return 2 * batch * sum(sizes)

    @property
    def input_bias(self):
        """The bias added to the input projection ``W x`` (``None`` without bias)."""
        return self.bias

    # ------------------------------------------------------------------ the step
    def check_features(self, shape):
        """Return the built input size; raise, naming `inputs`, if ``shape`` has another."""
        features = self.kernel.shape[0]
        if shape[-1] is not None and shape[-1] != features:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' was built for inputs with {features} "
                f"features; received `inputs` with shape {tuple(shape)}."
            )
        return features

    def project(self, inputs, training=False):
        """The input projection ``W x + b`` of one step ``(batch, features)``, after input
        dropout."""
        self.check_features(inputs.shape)
        if training and self.dropout > 0:
            inputs = inputs * self.get_dropout_mask(inputs)
        z = ops.matmul(inputs, self.kernel)
        if self.input_bias is not None:
            z = z + self.input_bias
        return z

    def recurrent_input(self, h, training=False):
        """``h`` as it enters the recurrent product: recurrent dropout applied."""
        if training and self.recurrent_dropout > 0:
            return h * self.get_recurrent_dropout_mask(h)
        return h

    def transition(self, z_x, states, training=False):
        """One step of the equations.

        Args:
            z_x: the input projection of this step, from :meth:`project`.
            states: the previous state tensors, in ``state_names`` order.
        Returns:
            ``(gates, new_states)``: a dict of gate activations keyed by ``gate_names``, and
            the new state list, whose first element is the output ``h``.
        """
        raise NotImplementedError

    def gates(self, inputs, states, training=False, zoneout_masks=None):
        """Gate activations and new state for one step of raw ``inputs``: :meth:`project`,
        :meth:`transition`, then zoneout (Krueger et al. 2017) of the states named in
        ``zoneout_rates``, which is no op when the cell has none.

        ``zoneout_masks``: this step's masks ``{state name: (batch, size) bool}``, True where
        the previous value is kept, as the sequence layers draw them (:meth:`zoneout_masks`);
        without them, a training step draws its own from the cell's seed generator.
        """
        # NumPy too: on a GPU, Keras's tensors live there and a NumPy operand would not.
        inputs = ops.convert_to_tensor(inputs)
        states = [ops.convert_to_tensor(state) for state in states]
        gates, new_states = self.transition(self.project(inputs, training), states, training)
        if any(self.zoneout_rates.values()):
            masks = zoneout_masks or {}
            new_states = [
                zone_out(
                    new, old, self.zoneout_rates.get(name, 0.0), training, self, masks.get(name)
                )
                for name, new, old in zip(self.state_names, new_states, states, strict=True)
            ]
        return gates, new_states

    def zoneout_masks(self, sequences):
        """Zoneout masks for every step of ``sequences`` ``(batch, time, features)``:
        ``{state name: (batch, time, size) bool}``, True (keep the previous value) with
        probability ``zoneout_rates[name]``; ``None`` when the cell has no zoneout."""
        if not any(self.zoneout_rates.values()):
            return None
        batch, time = ops.shape(sequences)[0], ops.shape(sequences)[1]
        return {
            name: keras.random.uniform((batch, time, size), seed=self.seed_generator) < rate
            for name, size in zip(self.state_names, self.state_size, strict=False)
            if (rate := self.zoneout_rates.get(name, 0.0)) > 0
        }

    def call(self, inputs, states, training=False):
        if len(inputs.shape) != 2:
            raise ValueError(
                f"{type(self).__name__} steps over one time step of `inputs` shaped "
                f"(batch, features); received shape {tuple(inputs.shape)}."
            )
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        _, new_states = self.gates(inputs, states, training)
        return new_states[0], new_states

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in self.state_size]

    # ------------------------------------------------------------------ saving
    def layout(self):
        """What gives the weights their meaning: the class (its registered name) and
        ``layout_keys``' values (the cell's attributes of those names, refused arguments
        left out), JSON-normalized."""
        layout = {"class": keras.saving.get_registered_name(type(self))}
        config = None
        for key in self.layout_keys:
            if key in self.refused_arguments:
                continue
            value = getattr(self, key)
            try:
                json.dumps(value)
            except TypeError:  # e.g. an activation function: its serialized config instead
                config = config or self.get_config()
                value = config[key]
            layout[key] = value
        return json.loads(json.dumps(layout, default=str))

    def save_own_variables(self, store):
        """Save the weights and, beside them, :meth:`layout` (as JSON bytes under ``layout``)."""
        super().save_own_variables(store)
        store[LAYOUT_KEY] = np.frombuffer(json.dumps(self.layout()).encode(), dtype=np.uint8)

    def load_own_variables(self, store):
        """Load the weights, refusing those saved under another :meth:`layout`.

        A record names the class and every field: any difference (a field on one side only
        counts unless its value is this class's default for it) refuses the weights, naming
        both sides. Weights saved without a record load as before; a record without a class
        (older versions) is compared on the keys both sides have.
        """
        if LAYOUT_KEY in store:
            saved = json.loads(np.asarray(store[LAYOUT_KEY], dtype=np.uint8).tobytes().decode())
            current = self.layout()
            differ = _differences(type(self), saved, current)
            if differ:
                mine = {key: current.get(key, "(none)") for key in differ}
                theirs = {key: saved.get(key, "(none)") for key in differ}
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': the weights being loaded were saved "
                    f"with {_describe(theirs)}, which gives them another meaning than this "
                    f"cell's {_describe(mine)}. Build the model with {_describe(saved)} to "
                    "load them."
                )
            store = _Without(store, LAYOUT_KEY)
        super().load_own_variables(store)

    # ------------------------------------------------------------------- config
    def get_config(self):
        config = {
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        config = {**super().get_config(), **config}
        for name in self.refused_arguments:
            config.pop(name, None)
        return config


#: The store entry under which :meth:`RecurrentCell.save_own_variables` records the layout.
LAYOUT_KEY = "layout"


def _default(cls, key):
    """``cls``'s constructor default for ``key`` (JSON-normalized), or ``_NONE``."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameter = inspect.signature(init).parameters.get(key)
        if parameter is not None and parameter.default is not parameter.empty:
            return json.loads(json.dumps(parameter.default, default=str))
    return _NONE


_NONE = object()


def _differences(cls, saved, current):
    """The keys on which two layout records give the weights different meanings."""
    if "class" not in saved:  # an older record: no class, fewer keys
        return [key for key in saved if key in current and saved[key] != current[key]]
    keys = [*current, *(key for key in saved if key not in current)]
    differ = []
    for key in keys:
        if key in saved and key in current:
            if saved[key] != current[key]:
                differ.append(key)
        elif (saved[key] if key in saved else current[key]) != _default(cls, key):
            differ.append(key)
    return differ


def _describe(layout):
    return ", ".join(f"{key}={value!r}" for key, value in layout.items()) or "no layout options"


class _Without:
    """A read-only view of a weights store without one key (Keras counts the store's keys)."""

    def __init__(self, store, key):
        self.store, self.key = store, key

    def keys(self):
        return [key for key in self.store.keys() if key != self.key]

    def __len__(self):
        return len(self.keys())

    def __contains__(self, key):
        return key != self.key and key in self.store

    def __getitem__(self, key):
        return self.store[key]

"""Export to a SavedModel that runs anywhere, with optional streaming signatures, and to TFLite.

:func:`export_saved_model` writes, through ``keras.export.ExportArchive``, a SavedModel whose
``serving_default`` signature takes ``inputs`` shaped and typed as the model's own input
(``(batch, time, features)`` floats, or ``(batch, time)`` token ids for a model that starts
with ``Embedding``), batch and time free unless the model's ``Input`` fixes them, and returns
``{"output": model(inputs)}``. The SavedModel needs neither this package nor Keras to load:
``tf.saved_model.load`` (or TF Serving) is enough. The graph is traced without ``jit_compile``
and our layers never emit the cuDNN-only ``CudnnRNN*`` ops, so it runs on any CPU or GPU server
(the stock ``keras.layers.LSTM``, exported on a GPU machine, can carry a cuDNN-only op that fails
on CPU servers: keras-team/keras#18504). With ``loop="tf-block"`` on a layer
(opt-in), exported on a machine without a GPU, the vanilla and peephole LSTM layers carry
TensorFlow's own fused ``BlockLSTMV2`` op for batches up to 16 (the cell's loop for larger
inputs, chosen at run time): faster on a CPU server, but such a SavedModel does not convert
to TFLite.

With ``streaming=True`` it also has, for online inference one time step at a time:

* ``initial_state(batch_size)`` -> the zero states, one entry per state tensor, named
  ``<layer>_<state>`` (e.g. ``lstm_h``, ``lstm_c``);
* ``step(x_t, <states>...)`` -> ``{"output": output_t, <new states>...}``, where ``x_t`` is one
  time step of the input (``(batch, features)``, or ``(batch,)`` token ids).

Each recurrent layer advances by its own cell (``layer.cell(x_t, states)``, i.e. the cell's
``transition(project(x_t), states)``), so streaming runs the very equations of the sequence
layers, whatever the number and shapes of a cell's states. Feeding a sequence through ``step``
gives, at step t, the model's output on the first t steps: every time slice for
``return_sequences=True`` models, the final output at the last step otherwise. A padding step
(token 0 after ``Embedding(mask_zero=True)``, or a ``Masking`` step) leaves the states as they
were, as the sequence layers do.

:func:`export_tflite` converts the same functions through ``tf.lite.TFLiteConverter``, at a
fixed length or with a free time axis.

TensorFlow is imported only when an export function is called, so the rest of the package runs
where TensorFlow is not installed (e.g. a JAX-only GPU machine).
"""

import functools
import inspect
import numbers
import os
import tempfile

import keras
import numpy as np

from . import kernels

#: Layers that act on each time step independently, so they stream step by step unchanged
#: (those with an ``axis`` must act on the feature axes only; see :func:`_per_step_problem`).
PER_STEP_LAYERS = (
    keras.layers.Activation,
    keras.layers.AlphaDropout,
    keras.layers.BatchNormalization,
    keras.layers.Dense,
    keras.layers.Dropout,
    keras.layers.ELU,
    keras.layers.Embedding,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.LayerNormalization,
    keras.layers.LeakyReLU,
    keras.layers.Masking,
    keras.layers.PReLU,
    keras.layers.ReLU,
    keras.layers.Rescaling,
    keras.layers.Softmax,
)


def export_saved_model(model, path, *, streaming=False, verbose=False):
    """Write ``model`` as a SavedModel at ``path`` and return ``path``.

    Args:
        model: a built Keras model with one input ``(batch, time, ...)``, e.g. a
            ``keras.Sequential`` starting with ``keras.Input((None, features))``, or with
            ``keras.Input((None,), dtype="int32")`` and an ``Embedding`` for token ids.
        path: the directory to write; its parent must exist. TF Serving expects
            ``<base>/<version>``, e.g. ``export_saved_model(model, "serving/my_model/1")``.
        streaming: also add the ``initial_state`` and ``step`` signatures (see the module
            docstring). The model must be a chain of layers whose recurrent layers run forward
            (no ``Bidirectional``, no ``go_backwards``), with only per-time-step layers
            (:data:`PER_STEP_LAYERS`, ``TimeDistributed``) between them.
        verbose: print what Keras writes.

    Every argument is checked before any tracing, and nothing is written when a check fails.

    Raises:
        ValueError: the model is not built, has a ``stateful`` layer, an ``unroll=True`` layer
            at a free length, or a ``TimeDistributed`` at a free length (which Keras 3.15
            traces wrongly); ``path`` is empty, a file, a non-empty directory holding no
            SavedModel, or its parent directory is missing; ``streaming=True`` on a model
            that cannot stream (the message names the layer and why).
        TypeError: ``model`` is not a ``keras.Model``, or ``path`` is not a path.
        ImportError: TensorFlow is not installed.
        RuntimeError: Keras runs another backend than TensorFlow.
    """
    path = _check_path(path, directory=True)
    _check_flag("streaming", streaming)
    _check_flag("verbose", verbose)
    archive, _ = _archive(_tensorflow("export_saved_model"), model, streaming=streaming)
    archive.write_out(path, verbose=verbose)
    return path


def export_tflite(model, path, *, time_steps=None, batch_size=1, streaming=False):
    """Convert ``model`` to a TFLite flatbuffer at ``path`` and return ``path``.

    The ``serving_default`` signature takes ``inputs`` shaped ``(batch_size, time_steps, ...)``;
    ``time_steps=None`` (the default) keeps the model's own time axis, so a model built on
    ``keras.Input((None, features))`` converts with a free time axis: the interpreter resizes
    ``inputs`` to each sequence's length (``get_signature_runner`` does it by itself).
    ``batch_size=None`` asks for a free batch axis, which TensorFlow 2.21's converter cannot
    give a recurrent loop (the conversion then fails, saying to pass ``batch_size``). With
    ``streaming=True`` the file also has the ``step`` signature at ``batch_size`` (start it from
    zero states of shape ``(batch_size, units)``; an argument with fewer rows fails instead of
    broadcasting). Run it with ``tf.lite.Interpreter(path).get_signature_runner(key)``.

    Raises:
        ValueError: as :func:`export_saved_model`; a bad ``time_steps`` / ``batch_size`` (or one
            that contradicts the model's ``Input``); ``path`` is a directory; the conversion
            failed (naming the free axes to fix).
        TypeError, ImportError, RuntimeError: as :func:`export_saved_model`.
    """
    path = _check_path(path, directory=False)
    _check_flag("streaming", streaming)
    for name, value in (("time_steps", time_steps), ("batch_size", batch_size)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(
                f"Argument `{name}` must be a positive integer or None; received {name}={value!r}."
            )
    time_steps = None if time_steps is None else int(time_steps)
    batch_size = None if batch_size is None else int(batch_size)
    tf = _tensorflow("export_tflite")
    keys = ["serving_default", "step"] if streaming else ["serving_default"]
    with tempfile.TemporaryDirectory() as saved_model, kernels.forced("auto"):  # no tf-block
        archive, spec = _archive(tf, model, streaming, time_steps, batch_size)
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=keys)
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # the converter raises its own ConverterError
            free = [
                name
                for name, size in (("batch_size", spec.shape[0]), ("time_steps", spec.shape[1]))
                if size is None
            ]
            hint = ""
            if free:
                hint = (
                    f" The converter could not keep {' and '.join(free)} free: pass "
                    f"{' and '.join(f'`{name}`' for name in free)} to convert at fixed sizes "
                    "(a free batch fails on the recurrent loop's tensor lists)."
                )
            raise ValueError(f"TFLite conversion of model '{model.name}' failed.{hint}") from error
    with open(path, "wb") as file:
        file.write(flatbuffer)
    return path


# ----------------------------------------------------------------------------- arguments
def _tensorflow(caller):
    """TensorFlow, imported now; a clear error if it is missing or Keras runs another backend."""
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            f"{caller} writes TensorFlow artifacts and needs TensorFlow, which is not installed "
            "here: `pip install tensorflow` (the rest of keras_lstm_variants runs without it)."
        ) from error
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"{caller} traces the model with TensorFlow, but Keras runs the "
            f"{keras.backend.backend()!r} backend. Save the model (`model.save('m.keras')`), "
            "then load and export it in a process started with KERAS_BACKEND=tensorflow."
        )
    return tf


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"Argument `{name}` must be True or False; received {name}={value!r}.")


def _check_path(path, directory):
    """``path`` as a string, checked before any work: it names a directory (SavedModel) or a
    file (TFLite) that may be written, in an existing parent directory."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"Argument `path` must be a path; received path={path!r}.") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise ValueError("Argument `path` must not be empty.")
    kind = "a directory (the SavedModel)" if directory else "a file (the .tflite flatbuffer)"
    if directory and os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"Argument `path` names {kind}, but {path!r} exists and is a file.")
    if directory and os.path.isdir(path) and os.listdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(
                f"Argument `path` names {kind}, but {path!r} is a directory that holds other "
                "files and no SavedModel; give a new directory (TF Serving reads "
                "`<base>/<version>`, e.g. 'serving/my_model/1')."
            )
    if not directory and os.path.isdir(path):
        raise ValueError(f"Argument `path` names {kind}, but {path!r} is a directory.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(
            f"Argument `path`: the parent directory {parent!r} does not exist; create it first "
            f"(received path={path!r})."
        )
    if not os.access(parent, os.W_OK):
        raise ValueError(f"Argument `path`: cannot write in {parent!r} (received path={path!r}).")
    return path


def _input_spec(tf, model, time_steps=None, batch_size=None):
    """The ``tf.TensorSpec`` of the model's one input: its dtype and rank, batch and time free
    unless the model's ``Input`` (or ``time_steps`` / ``batch_size``) fixes them."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `model` must be a keras.Model (e.g. keras.Sequential([keras.Input(...), "
            f"layer])); received {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' has not been built, so its input shape is unknown: start it "
            "with `keras.Input((time, features))`, or call it on data, before exporting."
        )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs or len(inputs) != 1 or len(inputs[0].shape) < 2:
        raise ValueError(
            f"Model '{model.name}' must have one input shaped (batch, time, ...): e.g. a "
            "Sequential or functional model starting with `keras.Input((None, features))`, or "
            f"`keras.Input((None,), dtype='int32')` for token ids; received inputs {inputs!r}."
        )
    for layer in _all_layers(model):
        if getattr(layer, "stateful", False):
            raise ValueError(
                f"Cannot export layer '{layer.name}' with stateful=True: a served model would "
                "carry one request's state into the next. Export a copy built with "
                "stateful=False (same weights); for state carried across calls, use "
                "streaming=True and pass the states to `step`."
            )
    batch, time, *rest = inputs[0].shape
    batch = _fixed(model, "batch_size", batch, batch_size)
    time = _fixed(model, "time_steps", time, time_steps)
    unrolled = [layer for layer in _all_layers(model) if getattr(layer, "unroll", False)]
    if time is None and unrolled:
        raise ValueError(
            f"Cannot export layer '{unrolled[0].name}' with unroll=True at a free length: "
            "unrolling needs the number of time steps when the graph is traced. Build the model "
            "on `keras.Input((time, features))` (or pass `time_steps=` to export_tflite)."
        )
    distributed = [layer for layer in _all_layers(model) if _is_time_distributed(layer)]
    if time is None and distributed and not _time_distributed_maps_over_time(tf):
        raise ValueError(
            f"Cannot export layer '{distributed[0].name}' (TimeDistributed) with a free time "
            f"axis: in this Keras ({keras.__version__}) a traced TimeDistributed maps over the "
            "batch size instead of the time steps when the length is unknown, so the SavedModel "
            "would answer wrongly. Fix the length (`keras.Input((time, features))`, or "
            "`time_steps=` for TFLite), or apply the wrapped layer directly (a Dense acts on "
            "each time step by itself)."
        )
    return tf.TensorSpec((batch, time, *rest), inputs[0].dtype, name="inputs")


def _fixed(model, name, own, given):
    """The size of an input axis: the model's own if its Input fixes it, else ``given``."""
    if own is None or given is None or own == given:
        return given if own is None else own
    raise ValueError(
        f"Argument `{name}`={given} contradicts model '{model.name}', whose Input fixes that "
        f"axis at {own}; pass {name}={own} or None."
    )


def _is_time_distributed(layer):
    return isinstance(layer, keras.layers.TimeDistributed)


@functools.cache
def _time_distributed_maps_over_time(tf):
    """Whether a traced ``TimeDistributed`` with an unknown length maps over the time steps
    (Keras 3.15 maps over ``shape[0]`` of the untransposed input: the batch size)."""
    layer = keras.layers.TimeDistributed(
        keras.layers.Dense(1, kernel_initializer="ones", use_bias=False)
    )
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, 1), "float32")])
    return tuple(traced(tf.ones((2, 3, 1))).shape) == (2, 3, 1)


def _all_layers(model):
    return list(model._flatten_layers(include_self=False))


def _named(outputs):
    """The model's outputs as the signature's named outputs."""
    if isinstance(outputs, dict):
        return outputs
    if isinstance(outputs, (list, tuple)):
        return {f"output_{i}": output for i, output in enumerate(outputs)}
    return {"output": outputs}


# ------------------------------------------------------------------------------ the archive
def _archive(tf, model, streaming, time_steps=None, batch_size=None):
    """An ``ExportArchive`` with ``serving_default`` and, if ``streaming``, the step signatures;
    and the spec of ``serving_default``'s input."""
    spec = _input_spec(tf, model, time_steps, batch_size)
    stream = Stream(model) if streaming else None
    archive = keras.export.ExportArchive()
    archive.track(model)
    _add_checked(
        tf,
        archive,
        "serving_default",
        lambda inputs: _named(model(inputs, training=False)),
        [spec],
    )
    if stream is not None:
        step_spec = tf.TensorSpec((spec.shape[0], *spec.shape[2:]), spec.dtype, name="x_t")
        batch_spec = tf.TensorSpec((), tf.int32, name="batch_size")
        _add_checked(tf, archive, "initial_state", stream.initial_state, [batch_spec])
        state_specs = [
            tf.TensorSpec((spec.shape[0], *shape), dtype, name=name)
            for name, shape, dtype in zip(stream.names, stream.shapes, stream.dtypes, strict=True)
        ]
        _add_checked(tf, archive, "step", stream.step, [step_spec, *state_specs])
    return archive, spec


def _add_checked(tf, archive, name, fn, specs):
    """Add endpoint ``fn`` whose arguments are checked when it runs.

    A SavedModel signature does not check shapes by itself: given the wrong number of features
    it would reshape them into garbage or fail deep inside the graph, and states of batch 1
    with an ``x_t`` of batch 2 would broadcast into a batch-2 answer. ``tf.ensure_shape`` and
    an equality check on the batch sizes raise ``InvalidArgumentError`` naming the argument.
    """

    def checked(*args):
        args = [
            tf.ensure_shape(arg, spec.shape, name=spec.name)
            for arg, spec in zip(args, specs, strict=True)
        ]
        if name == "initial_state":
            check = tf.debugging.assert_non_negative(
                args[0], message="initial_state: `batch_size` must be >= 0"
            )
            with tf.control_dependencies([check]):
                args = [tf.identity(args[0])]
        elif len(args) > 1 and specs[0].shape.rank and specs[0].shape[0] is None:
            batch = tf.shape(args[0])[0]
            checks = [
                tf.debugging.assert_equal(
                    tf.shape(arg)[0],
                    batch,
                    message=f"{name}: `{spec.name}` must have the batch size of `{specs[0].name}`",
                )
                for arg, spec in zip(args[1:], specs[1:], strict=True)
            ]
            with tf.control_dependencies(checks):
                args = [tf.identity(arg) for arg in args]
        elif len(args) > 1 and specs[0].shape.rank:
            # A fixed batch (TFLite): the interpreter resizes inputs to what it is given and has
            # no assertion op, so a batch-1 state would broadcast silently. Reading row
            # `batch - 1` of every argument fails (index out of bounds) when one has fewer rows;
            # its sum, clipped to 0, joins the output so that the converter keeps the reads.
            last = specs[0].shape[0] - 1
            outputs = fn(*args)
            rows = [
                tf.reduce_sum(tf.abs(tf.cast(tf.gather(arg, last), tf.float32))) for arg in args
            ]
            zero = tf.cast(tf.minimum(tf.add_n(rows), 0.0), outputs["output"].dtype)
            return {**outputs, "output": outputs["output"] + zero}
        return fn(*args)

    # Name the arguments after the specs, so that the reloaded function takes keywords too.
    checked.__signature__ = inspect.Signature(
        [inspect.Parameter(spec.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for spec in specs]
    )
    archive.add_endpoint(name, checked, input_signature=specs)


# ------------------------------------------------------------------------------- streaming
def _state_names(layer, structure):
    """Names of recurrent ``layer``'s flat states: ``<layer>_<state>``, or
    ``<layer>_<i>_<state>`` for the i-th cell of a ``StackedRNNCells``."""
    cells = getattr(layer.cell, "cells", None)
    if cells is None:
        return [f"{layer.name}_{name}" for name in _cell_state_names(layer.cell, structure)]
    return [
        f"{layer.name}_{index}_{name}"
        for index, cell in enumerate(cells)
        for name in _cell_state_names(cell, structure[index])
    ]


def _cell_state_names(cell, structure):
    """A cell's ``state_names`` (h, c), or ``state0, state1, ...`` for cells without them."""
    count = len(keras.tree.flatten(structure))
    names = tuple(getattr(cell, "state_names", ()))
    return names if len(names) == count else [f"state{k}" for k in range(count)]


def _zero_states(cell, batch_size):
    """``cell``'s zero states for ``batch_size`` sequences, nested as the cell nests them."""
    if hasattr(cell, "get_initial_state"):
        return cell.get_initial_state(batch_size=batch_size)
    sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
    shapes = [
        (batch_size, *size) if isinstance(size, (list, tuple)) else (batch_size, size)
        for size in sizes
    ]
    return [keras.ops.zeros(shape, dtype=cell.compute_dtype) for shape in shapes]


def _output_state(layer, flat_states):
    """The flat state that is the cell's output ``h`` (the last cell's first state)."""
    cells = getattr(layer.cell, "cells", None)
    if cells is None:
        return flat_states[0]
    structure = _zero_states(layer.cell, 1)
    return flat_states[len(keras.tree.flatten(structure)) - len(keras.tree.flatten(structure[-1]))]


class Stream:
    """The model as a step function: ``step(x_t, *states) -> {"output", new states}``.

    Built once per export, it checks that the model can stream and records, per recurrent
    layer, the nesting of its states (read from the cell, any number of any shape) and their
    flat names; ``names``, ``shapes`` (without batch) and ``dtypes`` list the flat states.
    """

    def __init__(self, model):
        self.layers = _chain(model)
        self.structures, self.names, self.shapes, self.dtypes = {}, [], [], []
        per_step, masked = True, False
        for layer in self.layers:
            if isinstance(layer, keras.layers.Bidirectional):
                raise ValueError(
                    f"Cannot stream layer '{layer.name}': a Bidirectional layer reads the "
                    "sequence backwards too, so it needs the whole sequence. Export it with "
                    "streaming=False."
                )
            if isinstance(layer, keras.layers.RNN):
                if not per_step:
                    raise ValueError(
                        f"Cannot stream recurrent layer '{layer.name}': it follows a layer that "
                        "reduced the sequence to one vector."
                    )
                if layer.go_backwards:
                    raise ValueError(
                        f"Cannot stream layer '{layer.name}': go_backwards=True needs the whole "
                        "sequence."
                    )
                if masked:
                    _check_masked_output(layer)
                structure = _zero_states(layer.cell, 1)
                flat = keras.tree.flatten(structure)
                self.structures[layer.name] = structure
                self.names += _state_names(layer, structure)
                self.shapes += [tuple(t.shape[1:]) for t in flat]
                self.dtypes += [keras.backend.standardize_dtype(t.dtype) for t in flat]
                per_step = layer.return_sequences
                masked = masked and per_step
            elif per_step:
                problem = _per_step_problem(layer, masked)
                if problem:
                    raise ValueError(
                        f"Cannot stream layer '{layer.name}' ({type(layer).__name__}): {problem}"
                    )
                masked = masked or _makes_mask(layer)
        if not self.structures:
            raise ValueError(f"Model '{model.name}' has no recurrent layer to stream.")

    def initial_state(self, batch_size):
        """The zero states for ``batch_size`` sequences, keyed by state name."""
        flat = []
        for layer in self.layers:
            if layer.name in self.structures:
                flat += keras.tree.flatten(_zero_states(layer.cell, batch_size))
        return dict(zip(self.names, flat, strict=True))

    def step(self, x_t, *states):
        """One time step through every layer; each recurrent layer advances its own cell.

        In the per-step part of the model (before the last sequence layer's output is reduced),
        layers see the step as a sequence of length 1, exactly as they saw the sequence."""
        states, new_states = list(states), []
        per_step, mask = True, None
        for layer in self.layers:
            if layer.name in self.structures:
                structure = self.structures[layer.name]
                count = len(keras.tree.flatten(structure))
                old = states[:count]
                del states[:count]
                layer_states = keras.tree.pack_sequence_as(structure, old)
                output, layer_states = layer.cell(x_t, layer_states, training=False)
                flat = keras.tree.flatten(layer_states)
                if mask is not None:
                    keep = [keras.ops.reshape(mask, (-1,) + (1,) * (len(s.shape) - 1)) for s in old]
                    flat = [
                        keras.ops.where(k, n, o) for k, n, o in zip(keep, flat, old, strict=True)
                    ]
                    empty = (
                        keras.ops.zeros_like(output)
                        if layer.zero_output_for_mask
                        else _output_state(layer, old)
                    )
                    output = keras.ops.where(keras.ops.expand_dims(mask, -1), output, empty)
                new_states += flat
                x_t = output
                per_step = layer.return_sequences
                mask = mask if per_step else None
            elif per_step:
                sequence = keras.ops.expand_dims(x_t, 1)
                if _makes_mask(layer):
                    step_mask = layer.compute_mask(sequence)[:, 0]
                    mask = step_mask if mask is None else keras.ops.logical_and(mask, step_mask)
                x_t = layer(sequence, training=False)[:, 0]
            else:
                x_t = layer(x_t, training=False)
        return {"output": x_t, **dict(zip(self.names, new_states, strict=True))}


def _makes_mask(layer):
    return isinstance(layer, keras.layers.Masking) or (
        isinstance(layer, keras.layers.Embedding) and layer.mask_zero
    )


def _check_masked_output(layer):
    """A masked step repeats the layer's last output: that must be a state of the cell."""
    if layer.zero_output_for_mask:
        return
    structure = _zero_states(layer.cell, 1)
    output_state = _output_state(layer, keras.tree.flatten(structure))
    try:
        output_shape = tuple(layer.output.shape[-1:])
    except (AttributeError, ValueError):
        output_shape = None
    if tuple(output_state.shape[1:]) != output_shape:
        raise ValueError(
            f"Cannot stream layer '{layer.name}' behind a mask: a padding step repeats the "
            "layer's last output, which its cell does not keep as a state."
        )


def _rank(layer):
    try:
        return len(keras.tree.flatten(layer.input)[0].shape)
    except (AttributeError, ValueError, IndexError):
        return None


def _per_step_problem(layer, masked):
    """Why ``layer`` does not act on each time step of its input alone, or ``None``."""
    if isinstance(layer, keras.layers.TimeDistributed):
        return None
    if not isinstance(layer, PER_STEP_LAYERS):
        return (
            "only recurrent layers and per-time-step layers (Dense, Embedding, normalization, "
            "activations, dropout, TimeDistributed) may act on the sequence."
        )
    rank = _rank(layer)
    if rank is None:
        return "its input shape is unknown."
    axis = getattr(layer, "axis", None)
    if axis is not None:
        axes = [axis] if isinstance(axis, numbers.Integral) else list(axis)
        if any(int(a) % rank < 2 for a in axes):
            return (
                f"axis={axis!r} reaches across time steps (or the batch) of its input of rank "
                f"{rank}; only the feature axes (2 and up, or -1) act on each step alone."
            )
    if isinstance(layer, keras.layers.Softmax) and masked:
        return "a Softmax behind a mask (Embedding(mask_zero=True), Masking) mixes the mask in."
    if isinstance(layer, keras.layers.PReLU) and layer.alpha.shape[0] != 1:
        return (
            "its alpha has one value per time step; build it with shared_axes=[1] to share "
            "alpha across time."
        )
    if isinstance(layer, keras.layers.Rescaling):
        for name in ("scale", "offset"):
            shape = np.shape(getattr(layer, name))
            if len(shape) >= rank - 1 and shape[-(rank - 1)] != 1:
                return f"its {name} has one value per time step."
    return None


def _chain(model):
    """``model``'s layers, checked to form a single chain input -> ... -> output."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        return layers
    expected = model.inputs[0]
    for layer in layers:
        try:
            is_next = layer.input is expected
            expected = layer.output
        except (AttributeError, ValueError):
            is_next = False
        if not is_next:
            raise ValueError(
                f"Cannot stream model '{model.name}': streaming needs a chain of layers (each "
                f"feeding the next), but layer '{layer.name}' is not fed by the previous one."
            )
    if expected is not model.outputs[0] or len(model.outputs) != 1:
        raise ValueError(f"Cannot stream model '{model.name}': its output is not its last layer's.")
    return layers

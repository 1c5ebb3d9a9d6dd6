"""Export to a SavedModel that runs anywhere, with optional streaming signatures, and to TFLite.

:func:`export_saved_model` writes, through ``keras.export.ExportArchive``, a SavedModel whose
``serving_default`` signature takes ``inputs`` shaped ``(batch, time, features)`` with batch
and time unknown and returns ``{"output": model(inputs)}``. The SavedModel needs neither this
package nor Keras to load: ``tf.saved_model.load`` (or TF Serving) is enough. The graph is
traced without ``jit_compile`` and our layers never emit the cuDNN-only ``CudnnRNN*`` ops, so it
runs on any CPU or GPU server (the stock ``keras.layers.LSTM``, exported on a GPU machine, can
carry a cuDNN-only op that fails on CPU servers: keras-team/keras#18504).

With ``streaming=True`` it also has, for online inference one time step at a time:

* ``initial_state(batch_size)`` -> the zero states, one entry per state tensor, named
  ``<layer>_<state>`` (e.g. ``lstm_h``, ``lstm_c``);
* ``step(x_t, <states>...)`` -> ``{"output": output_t, <new states>...}``.

Each recurrent layer advances by its own cell (``layer.cell(x_t, states)``, i.e. the cell's
``transition(project(x_t), states)``), so streaming runs the very equations of the sequence
layers. Feeding a sequence through ``step`` gives, at step t, the model's output on the first t
steps: every time slice for ``return_sequences=True`` models, the final output at the last step
otherwise.

:func:`export_tflite` converts the same functions, at a fixed length (and batch), through
``tf.lite.TFLiteConverter``.
"""

import inspect
import numbers
import os
import tempfile

import keras
import tensorflow as tf

#: Layers that act on each time step independently, so they stream step by step unchanged.
PER_STEP_LAYERS = (
    keras.layers.Activation,
    keras.layers.AlphaDropout,
    keras.layers.BatchNormalization,
    keras.layers.Dense,
    keras.layers.Dropout,
    keras.layers.ELU,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.LayerNormalization,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ReLU,
    keras.layers.Rescaling,
    keras.layers.Softmax,
)


def export_saved_model(model, path, *, streaming=False, verbose=False):
    """Write ``model`` as a SavedModel at ``path`` and return ``path``.

    Args:
        model: a built Keras model whose input is ``(batch, time, ...)``, e.g. a
            ``keras.Sequential`` starting with ``keras.Input((None, features))``.
        path: the directory to write; its parent must exist. TF Serving expects
            ``<base>/<version>``, e.g. ``export_saved_model(model, "serving/my_model/1")``.
        streaming: also add the ``initial_state`` and ``step`` signatures (see the module
            docstring). The model must be a chain of layers whose recurrent layers run forward
            (no ``Bidirectional``, no ``go_backwards``), with only per-time-step layers
            (:data:`PER_STEP_LAYERS`, ``TimeDistributed``) between them.
        verbose: print what Keras writes.

    Raises:
        ValueError: the model is not built, ``path``'s parent directory is missing, or
            ``streaming=True`` on a model that cannot stream.
    """
    path = os.fspath(path)
    _check_parent(path, "path")
    archive = _archive(model, streaming=streaming)
    archive.write_out(path, verbose=verbose)
    return path


def export_tflite(model, path, *, time_steps, batch_size=1, streaming=False):
    """Convert ``model`` to a TFLite flatbuffer at ``path`` and return ``path``.

    The ``serving_default`` signature takes ``inputs`` of the fixed shape
    ``(batch_size, time_steps, features...)``; with ``streaming=True`` the file also has the
    ``step`` signature at ``batch_size`` (start it from zero states of shape
    ``(batch_size, units)``). Run it with ``tf.lite.Interpreter(path).get_signature_runner()``.

    Raises:
        ValueError: as :func:`export_saved_model`, or a bad ``time_steps`` / ``batch_size``.
    """
    path = os.fspath(path)
    _check_parent(path, "path")
    for name, value in (("time_steps", time_steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(
                f"Argument `{name}` must be a positive integer; received {name}={value!r}."
            )
    archive = _archive(model, streaming, time_steps=int(time_steps), batch_size=int(batch_size))
    keys = ["serving_default", "step"] if streaming else ["serving_default"]
    with tempfile.TemporaryDirectory() as saved_model:
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=keys)
        flatbuffer = converter.convert()
    with open(path, "wb") as file:
        file.write(flatbuffer)
    return path


def _check_parent(path, name):
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(
            f"Argument `{name}`: the parent directory {parent!r} does not exist; create it first "
            f"(received {name}={path!r})."
        )


def _input_spec(model, time_steps=None, batch_size=None):
    """The ``tf.TensorSpec`` of the model's one input, batch and time free unless fixed."""
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' has not been built, so its input shape is unknown: start it "
            "with `keras.Input((time, features))`, or call it on data, before exporting."
        )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs or len(inputs) != 1 or len(inputs[0].shape) < 3:
        raise ValueError(
            f"Model '{model.name}' must have one input shaped (batch, time, features), e.g. a "
            "Sequential or functional model starting with `keras.Input((None, features))`; "
            f"received inputs {inputs!r}."
        )
    shape = (batch_size, time_steps, *inputs[0].shape[2:])
    return tf.TensorSpec(shape, inputs[0].dtype, name="inputs")


def _named(outputs):
    """The model's outputs as the signature's named outputs."""
    if isinstance(outputs, dict):
        return outputs
    if isinstance(outputs, (list, tuple)):
        return {f"output_{i}": output for i, output in enumerate(outputs)}
    return {"output": outputs}


def _archive(model, streaming, time_steps=None, batch_size=None):
    """An ``ExportArchive`` with ``serving_default`` and, if ``streaming``, the step signatures."""
    spec = _input_spec(model, time_steps, batch_size)
    stream = Stream(model) if streaming else None
    archive = keras.export.ExportArchive()
    archive.track(model)
    _add_checked(
        archive, "serving_default", lambda inputs: _named(model(inputs, training=False)), [spec]
    )
    if stream is not None:
        step_spec = tf.TensorSpec((batch_size, *spec.shape[2:]), spec.dtype, name="x_t")
        batch_spec = tf.TensorSpec((), tf.int32, name="batch_size")
        _add_checked(archive, "initial_state", stream.initial_state, [batch_spec])
        _add_checked(archive, "step", stream.step, [step_spec, *stream.state_specs(batch_size)])
    return archive


def _add_checked(archive, name, fn, specs):
    """Add endpoint ``fn`` whose arguments' shapes are checked when it runs.

    A SavedModel signature does not check shapes by itself: given the wrong number of features
    it would reshape them into garbage or fail deep inside the graph. ``tf.ensure_shape``
    raises ``InvalidArgumentError`` naming the expected shape instead.
    """

    def checked(*args):
        return fn(
            *[tf.ensure_shape(arg, spec.shape, name=spec.name) for arg, spec in zip(args, specs)]
        )

    # Name the arguments after the specs, so that the reloaded function takes keywords too.
    checked.__signature__ = inspect.Signature(
        [inspect.Parameter(spec.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for spec in specs]
    )
    archive.add_endpoint(name, checked, input_signature=specs)


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
    count = len(tf.nest.flatten(structure))
    names = tuple(getattr(cell, "state_names", ()))
    return names if len(names) == count else [f"state{k}" for k in range(count)]


class Stream:
    """The model as a step function: ``step(x_t, *states) -> {"output", new states}``.

    Built once per export, it checks that the model can stream and records, per recurrent
    layer, the nesting of its states (``cell.get_initial_state``) and their flat names.
    """

    def __init__(self, model):
        self.layers = _chain(model)
        self.structures, self.names = {}, []
        per_step = True
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
                structure = layer.cell.get_initial_state(batch_size=1)
                self.structures[layer.name] = structure
                self.names += _state_names(layer, structure)
                per_step = layer.return_sequences
            elif per_step and not _is_per_step(layer):
                raise ValueError(
                    f"Cannot stream layer '{layer.name}' ({type(layer).__name__}): only "
                    "recurrent layers and per-time-step layers (Dense, normalization, "
                    "activations, dropout, TimeDistributed) may act on the sequence."
                )
        if not self.structures:
            raise ValueError(f"Model '{model.name}' has no recurrent layer to stream.")

    def state_specs(self, batch_size=None):
        flat = [t for s in self.structures.values() for t in tf.nest.flatten(s)]
        return [
            tf.TensorSpec((batch_size, *t.shape[1:]), t.dtype, name=name)
            for t, name in zip(flat, self.names)
        ]

    def initial_state(self, batch_size):
        """The zero states for ``batch_size`` sequences, keyed by state name."""
        flat = []
        for layer in self.layers:
            if layer.name in self.structures:
                flat += tf.nest.flatten(layer.cell.get_initial_state(batch_size=batch_size))
        return dict(zip(self.names, flat))

    def step(self, x_t, *states):
        """One time step through every layer; each recurrent layer advances its own cell."""
        states, new_states = list(states), []
        for layer in self.layers:
            if layer.name in self.structures:
                structure = self.structures[layer.name]
                count = len(tf.nest.flatten(structure))
                layer_states = tf.nest.pack_sequence_as(structure, states[:count])
                del states[:count]
                x_t, layer_states = layer.cell(x_t, layer_states, training=False)
                new_states += tf.nest.flatten(layer_states)
            elif isinstance(layer, keras.layers.TimeDistributed):
                x_t = layer.layer(x_t, training=False)
            else:
                x_t = layer(x_t, training=False)
        return {"output": x_t, **dict(zip(self.names, new_states))}


def _is_per_step(layer):
    if isinstance(layer, keras.layers.TimeDistributed):
        return True
    if isinstance(layer, (keras.layers.LayerNormalization, keras.layers.BatchNormalization)):
        return layer.axis in (-1, [-1], 2, [2])
    return isinstance(layer, PER_STEP_LAYERS)


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

"""What every exporter shares: argument checks, TensorFlow on demand, the model's input spec,
and the one switch that makes the recurrent layers trace their cell's loop."""

import contextlib
import functools
import os

import keras
import numpy as np

from .. import kernels


@contextlib.contextmanager
def cell_loop():
    """Trace every recurrent layer through its cell's own loop (no fused TensorFlow kernel, such
    as ``BlockLSTMV2``, which TFLite's converter and tf2onnx lack)."""
    with kernels.forced("auto"):  # "auto" never picks tf-block
        yield


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

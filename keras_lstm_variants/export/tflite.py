"""TFLite export: the SavedModel's functions through ``tf.lite.TFLiteConverter``."""

import copy
import numbers
import tempfile

import keras
import numpy as np

from ._common import _check_flag, _check_path, _tensorflow, cell_loop
from .saved_model import _archive
from .streaming import Stream

#: ``quantize`` values: TFLite's post-training quantizations.
QUANTIZATIONS = (None, "float16", "dynamic", "int8")


def export_tflite(
    model,
    path,
    *,
    time_steps=None,
    batch_size=1,
    streaming=False,
    quantize=None,
    representative_data=None,
):
    """Convert ``model`` to a TFLite flatbuffer at ``path`` and return ``path``.

    The ``serving_default`` signature takes ``inputs`` shaped ``(batch_size, time_steps, ...)``;
    ``time_steps=None`` (the default) keeps the model's own time axis, so a model built on
    ``keras.Input((None, features))`` converts with a free time axis: the interpreter resizes
    ``inputs`` to each sequence's length (``get_signature_runner`` does it by itself).
    ``batch_size=None`` asks for a free batch axis, which TensorFlow 2.21's converter cannot
    give a recurrent loop (the conversion then fails, saying to pass ``batch_size``). With
    ``streaming=True`` the file also has the ``step`` signature at ``batch_size`` (start it from
    zero states of shape ``(batch_size, units)``; an argument with fewer rows fails instead of
    broadcasting). Run it with ``tf.lite.Interpreter(path).get_signature_runner(key)``, or
    LiteRT's ``ai_edge_litert.interpreter.Interpreter`` (the file needs no Flex ops).

    ``quantize`` applies TFLite's own post-training quantization (inputs and outputs stay
    float32, every signature, ``step`` included, keeps working):

    * ``"float16"`` -- weights stored as float16 (half the size), computed in float32;
    * ``"dynamic"`` -- weights stored as int8 (a quarter), activations quantized on the fly
      where a kernel supports it;
    * ``"int8"`` -- weights and activations int8 where TFLite has an integer kernel (float
      elsewhere), calibrated on ``representative_data``: an iterable of input arrays shaped
      like ``inputs`` (``(batch_size, time, ...)``; a few dozen typical sequences), which
      also calibrate ``step`` (fed one step at a time from zero states).

    docs/deploy.md lists the measured error against the float file and the sizes.

    Raises:
        ValueError: as :func:`export_saved_model`; a bad ``time_steps`` / ``batch_size`` (or one
            that contradicts the model's ``Input``); ``path`` is a directory; the conversion
            failed (naming the free axes to fix); an unknown ``quantize``, or ``"int8"``
            without ``representative_data`` (or data given to another mode).
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
    if not isinstance(quantize, (str, type(None))) or quantize not in QUANTIZATIONS:
        raise ValueError(
            f"Argument `quantize` must be one of {QUANTIZATIONS}; received quantize={quantize!r}."
        )
    if (quantize == "int8") != (representative_data is not None):
        raise ValueError(
            "Argument `representative_data` calibrates quantize='int8' and is needed there "
            f"only; received quantize={quantize!r} with representative_data="
            f"{'None' if representative_data is None else 'data'}."
        )
    time_steps = None if time_steps is None else int(time_steps)
    batch_size = None if batch_size is None else int(batch_size)
    tf = _tensorflow("export_tflite")
    keys = ["serving_default", "step"] if streaming else ["serving_default"]
    if quantize == "int8":
        length = _length(model, time_steps)
        if length is None:
            raise ValueError(
                "quantize='int8' needs a fixed length (`time_steps=`, or a model Input that "
                "fixes it): TFLite's integer quantizer crashes on a recurrent loop (TensorFlow "
                "2.21), so the recurrent layers are unrolled over the time steps."
            )
        model = _unrolled_copy(model, length)
    with tempfile.TemporaryDirectory() as saved_model, cell_loop():
        archive, spec = _archive(tf, model, streaming, time_steps, batch_size)
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=keys)
        _quantize(tf, converter, quantize, representative_data, model, streaming, spec)
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


def _quantize(tf, converter, quantize, data, model, streaming, spec):
    """Set ``converter`` up for TFLite's post-training ``quantize``."""
    if quantize is None:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize != "int8":
        return
    samples = [np.asarray(x, dtype=spec.dtype.as_numpy_dtype) for x in data]
    if not samples:
        raise ValueError("Argument `representative_data` is empty: give a few typical inputs.")
    expected = spec.shape
    for x in samples:
        if x.ndim != expected.rank or not expected.is_compatible_with(x.shape):
            raise ValueError(
                f"Argument `representative_data`: each input must be shaped {expected} like "
                f"`inputs`; received an array of shape {x.shape}."
            )
    stream = Stream(model) if streaming else None

    def calibration():
        for x in samples:
            yield "serving_default", {"inputs": x}
            if stream is None:
                continue
            states = dict(stream.initial_state(x.shape[0]))
            for t in range(x.shape[1]):
                yield "step", {"x_t": x[:, t], **{k: np.asarray(v) for k, v in states.items()}}
                result = stream.step(x[:, t], *states.values())
                states = {name: result[name] for name in stream.names}

    converter.representative_dataset = calibration


def _length(model, time_steps):
    try:
        own = model.inputs[0].shape[1]
    except (AttributeError, IndexError, TypeError, ValueError):
        own = None
    return time_steps if time_steps is not None else own


def _unrolled_copy(model, length):
    """A copy of ``model`` (same weights) on an Input of ``length`` steps, every recurrent layer
    that has a time loop with ``unroll=True`` (mLSTM in its recurrent form)."""

    def clone(layer):
        config = layer.get_config()
        layers = [config] if isinstance(layer, keras.layers.RNN) else []
        if isinstance(layer, keras.layers.Bidirectional):
            layers = [
                config[key]["config"] for key in ("layer", "backward_layer") if config.get(key)
            ]
        original = copy.deepcopy(config)
        for layer_config in layers:
            layer_config["unroll"] = True
            if layer_config.get("parallel"):  # mLSTM's parallel form has no loop to unroll
                layer_config["parallel"] = False
        try:
            return type(layer).from_config(config)
        except ValueError:  # a layer without a time loop (minGRU's scan) refuses unroll
            return type(layer).from_config(original)

    shape = tuple(model.inputs[0].shape)
    inputs = keras.Input(
        (length, *shape[2:]), batch_size=shape[0], dtype=model.inputs[0].dtype, name="inputs"
    )
    unrolled = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    unrolled.set_weights(model.get_weights())
    return unrolled

"""TFLite export: the SavedModel's functions through ``tf.lite.TFLiteConverter``."""

import numbers
import tempfile

from ._common import _check_flag, _check_path, _tensorflow, cell_loop
from .saved_model import _archive


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
    with tempfile.TemporaryDirectory() as saved_model, cell_loop():  # TFLite: no BlockLSTM
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

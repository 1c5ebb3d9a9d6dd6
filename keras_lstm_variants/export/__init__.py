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

from .onnx import export_onnx
from .saved_model import export_saved_model
from .streaming import PER_STEP_LAYERS, Stream
from .tflite import export_tflite

__all__ = ["PER_STEP_LAYERS", "Stream", "export_onnx", "export_saved_model", "export_tflite"]

"""keras-lstm-variants: the LSTM family as Keras 3 layers.

Cells (for ``keras.layers.RNN``, ``Bidirectional``, ``StackedRNNCells``) and sequence layers
with ``keras.layers.LSTM``'s signature, one pair per variant, declared once in :mod:`.registry`
(:data:`VARIANTS`): e.g. :class:`LSTMCell` / :class:`LSTM`, :class:`PeepholeLSTMCell` /
:class:`PeepholeLSTM`, :class:`GreffLSTMCell` / :class:`GreffLSTM` (the nine
:data:`GREFF_VARIANTS`), :class:`MinGRUCell` / :class:`MinGRU`, :class:`SLSTMCell` /
:class:`SLSTM`. Gate inspection: :func:`trace_gates`, :class:`GateStatistics`. Export:
:func:`export_saved_model`, :func:`export_tflite`, :func:`export_onnx`. Porting PyTorch
weights: :func:`weights_from_torch_lstm`. Which kernel runs a layer: :func:`explain_kernels`.
"""

from . import registry
from .cells import GREFF_VARIANTS, RecurrentCell
from .export import export_onnx, export_saved_model, export_tflite
from .gates import GateStatistics, trace_gates
from .kernels import explain as explain_kernels
from .layers import VariantRNN
from .porting import weights_from_torch_lstm

__version__ = "0.2.0"

#: Each variant's name, its cell class and its sequence layer class (from :mod:`.registry`).
VARIANTS = {record.name: (record.cell, record.layer) for record in registry.records()}

# The variants' cell and layer classes, exported from the registry (LSTMCell, LSTM, ...).
_CLASSES = {klass.__name__: klass for cell, layer in VARIANTS.values() for klass in (cell, layer)}
globals().update(_CLASSES)

__all__ = [
    "GREFF_VARIANTS",
    "VARIANTS",
    "GateStatistics",
    "RecurrentCell",
    "VariantRNN",
    "explain_kernels",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "registry",
    "trace_gates",
    "weights_from_torch_lstm",
]
__all__ += list(_CLASSES)

"""keras-lstm-variants: the LSTM family as Keras 3 layers.

Cells (for ``keras.layers.RNN``, ``Bidirectional``, ``StackedRNNCells``): :class:`LSTMCell`,
:class:`PeepholeLSTMCell`, :class:`CIFGLSTMCell`, :class:`GRUCell`. Sequence layers with
``keras.layers.LSTM``'s signature: :class:`LSTM`, :class:`PeepholeLSTM`, :class:`CIFGLSTM`,
:class:`GRU`.
"""

from .cells import CIFGLSTMCell, GRUCell, LSTMCell, PeepholeLSTMCell, RecurrentCell
from .export import export_saved_model, export_tflite
from .gates import GateStatistics, trace_gates
from .layers import CIFGLSTM, GRU, LSTM, PeepholeLSTM, VariantRNN

__version__ = "0.1.0"

#: Each variant's name, its cell class and its sequence layer class.
VARIANTS = {
    "lstm": (LSTMCell, LSTM),
    "peephole": (PeepholeLSTMCell, PeepholeLSTM),
    "cifg": (CIFGLSTMCell, CIFGLSTM),
    "gru": (GRUCell, GRU),
}

__all__ = [
    "CIFGLSTM",
    "CIFGLSTMCell",
    "GRU",
    "GRUCell",
    "GateStatistics",
    "LSTM",
    "LSTMCell",
    "PeepholeLSTM",
    "PeepholeLSTMCell",
    "RecurrentCell",
    "VARIANTS",
    "VariantRNN",
    "export_saved_model",
    "export_tflite",
    "trace_gates",
]

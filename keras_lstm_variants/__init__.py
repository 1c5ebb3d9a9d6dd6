"""keras-lstm-variants: the LSTM family as Keras 3 layers.

Cells (for ``keras.layers.RNN``, ``Bidirectional``, ``StackedRNNCells``) and sequence layers
with ``keras.layers.LSTM``'s signature, one pair per variant (:data:`VARIANTS`):
:class:`LSTMCell` / :class:`LSTM`, :class:`PeepholeLSTMCell` / :class:`PeepholeLSTM`,
:class:`CIFGLSTMCell` / :class:`CIFGLSTM`, :class:`GRUCell` / :class:`GRU`,
:class:`GreffLSTMCell` / :class:`GreffLSTM` (the nine :data:`GREFF_VARIANTS`),
:class:`MinGRUCell` / :class:`MinGRU`, :class:`MinLSTMCell` / :class:`MinLSTM`,
:class:`SLSTMCell` / :class:`SLSTM`, :class:`MLSTMCell` / :class:`MLSTM`. Gate inspection:
:func:`trace_gates`, :class:`GateStatistics`. Export: :func:`export_saved_model`,
:func:`export_tflite`. Porting PyTorch weights: :func:`weights_from_torch_lstm`.
"""

from . import registry
from .cells import (
    GREFF_VARIANTS,
    CIFGLSTMCell,
    GreffLSTMCell,
    GRUCell,
    LSTMCell,
    MinGRUCell,
    MinLSTMCell,
    MLSTMCell,
    PeepholeLSTMCell,
    RecurrentCell,
    SLSTMCell,
)
from .export import export_saved_model, export_tflite
from .gates import GateStatistics, trace_gates
from .layers import (
    CIFGLSTM,
    GRU,
    LSTM,
    MLSTM,
    SLSTM,
    GreffLSTM,
    MinGRU,
    MinLSTM,
    PeepholeLSTM,
    VariantRNN,
)
from .porting import weights_from_torch_lstm

__version__ = "0.2.0"

#: Each variant's name, its cell class and its sequence layer class (from :mod:`.registry`).
VARIANTS = {record.name: (record.cell, record.layer) for record in registry.records()}

__all__ = [
    "CIFGLSTM",
    "GREFF_VARIANTS",
    "GRU",
    "LSTM",
    "MLSTM",
    "SLSTM",
    "VARIANTS",
    "CIFGLSTMCell",
    "GRUCell",
    "GateStatistics",
    "GreffLSTM",
    "GreffLSTMCell",
    "LSTMCell",
    "MLSTMCell",
    "MinGRU",
    "MinGRUCell",
    "MinLSTM",
    "MinLSTMCell",
    "PeepholeLSTM",
    "PeepholeLSTMCell",
    "RecurrentCell",
    "SLSTMCell",
    "VariantRNN",
    "export_saved_model",
    "export_tflite",
    "trace_gates",
    "weights_from_torch_lstm",
]

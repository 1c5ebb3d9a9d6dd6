"""keras-lstm-variants: the LSTM family as Keras 3 layers.

Cells (for ``keras.layers.RNN``, ``Bidirectional``, ``StackedRNNCells``): :class:`LSTMCell`,
:class:`PeepholeLSTMCell`, :class:`CIFGLSTMCell`, :class:`GRUCell`. Sequence layers with
``keras.layers.LSTM``'s signature: :class:`LSTM`, :class:`PeepholeLSTM`, :class:`CIFGLSTM`,
:class:`GRU`.
"""

from . import cli as _cli

if _cli.running_as_the_command():  # before Keras loads TensorFlow: quiet its C++ start-up logs
    _cli.quiet_tensorflow()

from .cells import CIFGLSTMCell, GRUCell, LSTMCell, PeepholeLSTMCell, RecurrentCell
from .cells import GREFF_VARIANTS, GreffLSTMCell
from .cells import MLSTMCell, SLSTMCell
from .cells import MinGRUCell, MinLSTMCell
from .export import export_saved_model, export_tflite
from .gates import GateStatistics, trace_gates
from .layers import CIFGLSTM, GRU, LSTM, PeepholeLSTM, VariantRNN
from .layers import GreffLSTM
from .layers import MLSTM, SLSTM
from .layers import MinGRU, MinLSTM
from .porting import weights_from_torch_lstm

__version__ = "0.1.0"

#: Each variant's name, its cell class and its sequence layer class.
VARIANTS = {
    "lstm": (LSTMCell, LSTM),
    "peephole": (PeepholeLSTMCell, PeepholeLSTM),
    "cifg": (CIFGLSTMCell, CIFGLSTM),
    "gru": (GRUCell, GRU),
    "greff": (GreffLSTMCell, GreffLSTM),  # variant="V" by default; see GREFF_VARIANTS
    "slstm": (SLSTMCell, SLSTM),  # xLSTM (Beck et al. 2024)
    "mlstm": (MLSTMCell, MLSTM),  # xLSTM; trains in the parallel form
    "mingru": (MinGRUCell, MinGRU),  # Feng et al. 2024; trains with a parallel scan
    "minlstm": (MinLSTMCell, MinLSTM),  # Feng et al. 2024; trains with a parallel scan
}

__all__ = [
    "CIFGLSTM",
    "CIFGLSTMCell",
    "GRU",
    "GRUCell",
    "GREFF_VARIANTS",
    "GreffLSTM",
    "GreffLSTMCell",
    "GateStatistics",
    "LSTM",
    "LSTMCell",
    "MLSTM",
    "MLSTMCell",
    "MinGRU",
    "MinGRUCell",
    "MinLSTM",
    "MinLSTMCell",
    "PeepholeLSTM",
    "PeepholeLSTMCell",
    "RecurrentCell",
    "SLSTM",
    "SLSTMCell",
    "VARIANTS",
    "VariantRNN",
    "export_saved_model",
    "export_tflite",
    "trace_gates",
    "weights_from_torch_lstm",
]

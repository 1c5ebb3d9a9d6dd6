"""One file per variant family; :mod:`.base` holds what they share."""

from .base import RecurrentCell
from .cifg import CIFGLSTMCell
from .greff import GREFF_VARIANTS, GreffLSTMCell
from .gru import GRUCell
from .lstm import LSTMCell, PeepholeLSTMCell
from .minimal import MinGRUCell, MinLSTMCell
from .xlstm import MLSTMCell, SLSTMCell

__all__ = [
    "GREFF_VARIANTS",
    "CIFGLSTMCell",
    "GRUCell",
    "GreffLSTMCell",
    "LSTMCell",
    "MLSTMCell",
    "MinGRUCell",
    "MinLSTMCell",
    "PeepholeLSTMCell",
    "RecurrentCell",
    "SLSTMCell",
]

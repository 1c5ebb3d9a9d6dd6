"""One file per variant family; :mod:`.base` holds what they share."""

from .base import RecurrentCell
from .cifg import CIFGLSTMCell
from .gru import GRUCell
from .lstm import LSTMCell, PeepholeLSTMCell

__all__ = ["RecurrentCell", "LSTMCell", "PeepholeLSTMCell", "CIFGLSTMCell", "GRUCell"]

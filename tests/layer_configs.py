"""Every variant configuration the cross-cutting tests (precision, masked steps) run: each
registered variant, Greff et al.'s nine, both xLSTM forms, both scans' candidates, GRU's two
modes and the LSTM family's options."""

import keras_lstm_variants as klv
from keras_lstm_variants.cells.greff import GREFF_VARIANTS

#: The layer class and its arguments of each configuration.
CONFIGS = {
    "lstm": (klv.LSTM, {}),
    "peephole": (klv.PeepholeLSTM, {}),
    "cifg": (klv.CIFGLSTM, {"peepholes": ("forget", "output")}),
    "gru": (klv.GRU, {}),
    "gru-reset-before": (klv.GRU, {"reset_after": False}),
    **{f"greff-{v}": (klv.GreffLSTM, {"variant": v}) for v in GREFF_VARIANTS},
    "slstm": (klv.SLSTM, {"num_heads": 2}),
    "slstm-exp": (klv.SLSTM, {"num_heads": 2, "forget_activation": "exp"}),
    "mlstm": (klv.MLSTM, {"num_heads": 2}),
    "mlstm-stepped": (klv.MLSTM, {"num_heads": 2, "parallel": False}),
    "mingru": (klv.MinGRU, {}),
    "mingru-linear": (klv.MinGRU, {"log_space": False}),
    "minlstm": (klv.MinLSTM, {}),
    "lstm-layer_norm": (klv.LSTM, {"layer_norm": True}),
    "lstm-proj": (klv.LSTM, {"proj_units": 5}),
    "lstm-cell_clip": (klv.LSTM, {"cell_clip": 0.5}),
    "lstm-zoneout": (klv.LSTM, {"zoneout": 0.3}),
    "gru-layer_norm": (klv.GRU, {"layer_norm": True}),
}


def uncovered_variants():
    """Registered variants whose layer no configuration uses (a new variant must be added)."""
    covered = {layer_class for layer_class, _ in CONFIGS.values()}
    return [name for name, (_, layer) in klv.VARIANTS.items() if layer not in covered]

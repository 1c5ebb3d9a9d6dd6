"""``torch-fused``: PyTorch's own LSTM / GRU kernel (``torch.nn.LSTM``, ``torch.nn.GRU``:
oneDNN on a CPU, cuDNN on a GPU) called on the cell's weights, on the torch backend.

For cells that declare ``torch-lstm`` (the vanilla LSTM) or ``torch-gru`` (the GRU, with
``reset_after=True``), with the stock activations, no option (layer norm, projection,
clipping), one dtype, no mask, and ``use_cudnn="auto"`` (``use_cudnn=False`` keeps the cell's
own loop, as in ``keras.layers.LSTM``). PyTorch's weights are the transposes of ``kernel``
and ``recurrent_kernel``, gate blocks in its order: the LSTM's is Keras's (input, forget,
candidate, output); the GRU's is (reset, update, new) where Keras has (update, reset,
candidate). The LSTM's ``bias`` is the input bias (the recurrent one zero); the GRU's two rows
are the input and recurrent biases. Gradients reach the Keras variables through these views.
As with cuDNN in ``keras.layers.LSTM``, ``transition`` is not called here;
tests/test_eager_path.py proves the two equal. Measured speeds: docs/speed.md.
"""

import functools
import warnings

from . import torch_eager
from ._conditions import first, kernel_arithmetic, lstm_options

NAME = "torch-fused"


def why_not(layer, call):
    cell = layer.cell
    return first(
        lambda: torch_eager.why_not(layer, call),
        lambda: _maps(cell),
        "use_cudnn=False" if getattr(layer, "use_cudnn", "auto") != "auto" else None,
        lambda: kernel_arithmetic(cell),
    )


def _maps(cell):
    """Why the cell's weights do not map onto PyTorch's kernels (``None``: they do)."""
    capabilities = getattr(cell, "capabilities", frozenset())
    if "torch-lstm" in capabilities:
        return lstm_options(cell)
    if "torch-gru" in capabilities:
        if getattr(cell, "layer_norm", False):
            return "layer_norm is on"
        return None if cell.reset_after else "reset_after=False"
    return f"{type(cell).__name__} declares neither 'torch-lstm' nor 'torch-gru'"


def run(layer, call):
    return torch_rnn(
        layer.cell, call.sequences, call.initial_state, call.go_backwards, call.return_sequences
    )


def torch_rnn(cell, sequences, initial_state, go_backwards, return_sequences):
    """``(last_output, outputs, final_states)`` as ``torch_eager.eager_rnn`` returns them,
    from PyTorch's kernel."""
    import torch

    gru = "torch-gru" in cell.capabilities

    def ordered(weight):  # gate blocks on the last axis, in PyTorch's order
        if not gru:
            return weight
        update, reset, candidate = torch.chunk(weight, 3, dim=-1)
        return torch.cat([reset, update, candidate], dim=-1)

    weights = {
        "weight_ih_l0": ordered(cell.kernel.value).T,
        "weight_hh_l0": ordered(cell.recurrent_kernel.value).T,
    }
    if sequences.device.type != "cpu":  # cuDNN views each weight as one flat block
        weights = {name: weight.contiguous() for name, weight in weights.items()}
    if cell.bias is not None:
        bias = cell.bias.value
        weights["bias_ih_l0"] = ordered(bias[0] if gru else bias)
        weights["bias_hh_l0"] = ordered(bias[1]) if gru else torch.zeros_like(bias)
    x = torch.flip(sequences, [1]) if go_backwards else sequences
    kind = "GRU" if gru else "LSTM"
    module = _torch_module(kind, x.shape[-1], cell.units, cell.bias is not None, x.dtype, x.device)
    states = tuple(state[None] for state in initial_state)
    with warnings.catch_warnings():  # on a GPU: "weights are not part of single contiguous chunk"
        warnings.simplefilter("ignore", UserWarning)
        outputs, final = torch.func.functional_call(
            module, weights, (x, states[0] if gru else states)
        )
    final = [final[0]] if gru else [state[0] for state in final]
    last = final[0]
    return last, outputs if return_sequences else last[:, None], final


@functools.cache
def _torch_module(kind, features, units, bias, dtype, device):
    """A ``torch.nn.LSTM`` or ``GRU`` whose own weights are never used (``functional_call``
    passes ours)."""
    import torch

    module = getattr(torch.nn, kind)
    return module(features, units, bias=bias, batch_first=True, dtype=dtype, device=device)

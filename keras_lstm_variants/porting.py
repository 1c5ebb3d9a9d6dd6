"""Weights from other frameworks' LSTMs, as this package's weight lists.

No framework is imported here: the functions take NumPy arrays (or anything with
``.detach().cpu().numpy()``, such as torch tensors) and return NumPy arrays.
"""

import numbers
from collections.abc import Mapping

import numpy as np


def _numpy(value):
    if hasattr(value, "detach"):  # a torch tensor; torch itself is not imported
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def weights_from_torch_lstm(state_dict, layer_index=0, reverse=False):
    r"""The weight list of :class:`~keras_lstm_variants.LSTM` equal to one layer of a
    ``torch.nn.LSTM``.

    PyTorch stores, for layer ``k``, ``weight_ih_l{k}`` ``(4H, input)``, ``weight_hh_l{k}``
    ``(4H, H or P)``, ``bias_ih_l{k}`` and ``bias_hh_l{k}`` ``(4H,)`` with row blocks in the gate
    order i, f, g, o -- the order of this package's (and Keras's) column blocks -- and, with
    ``proj_size=P``, ``weight_hr_l{k}`` ``(P, H)``, for :math:`h_t = W_{hr}(o_t \odot
    \tanh(c_t))`. So ``kernel = weight_ih.T``, ``recurrent_kernel = weight_hh.T``,
    ``bias = bias_ih + bias_hh`` (the two biases always appear summed) and
    ``projection_kernel = weight_hr.T``.

    Args:
        state_dict: ``module.state_dict()`` of a ``torch.nn.LSTM`` (or the module itself), its
            values NumPy arrays or torch tensors.
        layer_index: which layer ``k`` of a stacked (``num_layers > 1``) LSTM.
        reverse: the backward direction of a bidirectional LSTM (the ``_reverse`` weights),
            for the backward layer of ``keras.layers.Bidirectional``.

    Returns:
        ``[kernel, recurrent_kernel, bias, projection_kernel]`` for
        ``klv.LSTM(H, proj_units=P)``; without ``bias_*`` (``bias=False``) no ``bias`` (build
        with ``use_bias=False``); without ``proj_size`` no ``projection_kernel``. Load it with
        ``layer.set_weights(...)``; initial states map as torch's ``(h_0[k], c_0[k])``.

    >>> import numpy as np
    >>> import keras_lstm_variants as klv
    >>> rng = np.random.default_rng(0)
    >>> torch_weights = {"weight_ih_l0": rng.normal(size=(16, 3)),
    ...                  "weight_hh_l0": rng.normal(size=(16, 2)),
    ...                  "bias_ih_l0": rng.normal(size=16), "bias_hh_l0": rng.normal(size=16),
    ...                  "weight_hr_l0": rng.normal(size=(2, 4))}
    >>> layer = klv.LSTM(4, proj_units=2)
    >>> _ = layer(np.zeros((1, 5, 3), "float32"))
    >>> layer.set_weights(klv.weights_from_torch_lstm(torch_weights))
    """
    if hasattr(state_dict, "state_dict") and callable(state_dict.state_dict):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            "Argument `state_dict` must be a mapping of torch.nn.LSTM weight names to arrays "
            f"(module.state_dict()); received {type(state_dict).__name__}."
        )
    if isinstance(layer_index, bool) or not isinstance(layer_index, numbers.Integral):
        raise ValueError(
            f"Argument `layer_index` must be a non-negative integer; received {layer_index!r}."
        )
    suffix = f"_l{layer_index}" + ("_reverse" if reverse else "")
    if f"weight_ih{suffix}" not in state_dict:
        found = sorted(key for key in state_dict if key.startswith("weight_ih_l"))
        raise ValueError(
            f"Argument `layer_index`={layer_index!r} (reverse={bool(reverse)}): `state_dict` has "
            f"no 'weight_ih{suffix}'; its LSTM weights are {found or 'absent'}."
        )
    weight_ih = _numpy(state_dict[f"weight_ih{suffix}"])
    weight_hh = _numpy(state_dict[f"weight_hh{suffix}"])
    hidden = weight_ih.shape[0] // 4
    if weight_ih.ndim != 2 or weight_ih.shape[0] != 4 * hidden or weight_hh.shape[0] != 4 * hidden:
        raise ValueError(
            f"Argument `state_dict`: 'weight_ih{suffix}' {weight_ih.shape} and 'weight_hh{suffix}' "
            f"{weight_hh.shape} are not torch.nn.LSTM weights (4 * hidden_size rows each)."
        )
    weights = [weight_ih.T, weight_hh.T]
    if f"bias_ih{suffix}" in state_dict:
        bias_ih, bias_hh = state_dict[f"bias_ih{suffix}"], state_dict[f"bias_hh{suffix}"]
        weights.append(_numpy(bias_ih) + _numpy(bias_hh))
    if f"weight_hr{suffix}" in state_dict:
        projection = _numpy(state_dict[f"weight_hr{suffix}"])
        if projection.shape != (weight_hh.shape[1], hidden):
            raise ValueError(
                f"Argument `state_dict`: 'weight_hr{suffix}' has shape {projection.shape}; "
                f"expected (proj_size, hidden_size) = ({weight_hh.shape[1]}, {hidden})."
            )
        weights.append(projection.T)
    return [np.ascontiguousarray(weight) for weight in weights]

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
    projection = state_dict.get(f"weight_hr{suffix}")
    projection = None if projection is None else _numpy(projection)
    hidden = weight_ih.shape[0] // 4 if weight_ih.ndim == 2 else 0
    # h's width: the projection's P when there is one, else H.
    width = projection.shape[0] if projection is not None and projection.ndim == 2 else hidden
    expected = {
        f"weight_ih{suffix}": (4 * hidden, weight_ih.shape[-1] if weight_ih.ndim else 0),
        f"weight_hh{suffix}": (4 * hidden, width),
    }
    found = {f"weight_ih{suffix}": weight_ih.shape, f"weight_hh{suffix}": weight_hh.shape}
    has_bias = f"bias_ih{suffix}" in state_dict or f"bias_hh{suffix}" in state_dict
    if has_bias:
        biases = {
            name: _numpy(state_dict[name]) if name in state_dict else np.zeros((0,))
            for name in (f"bias_ih{suffix}", f"bias_hh{suffix}")
        }
        expected.update(dict.fromkeys(biases, (4 * hidden,)))
        found.update({name: value.shape for name, value in biases.items()})
    if projection is not None:
        expected[f"weight_hr{suffix}"] = (width, hidden)
        found[f"weight_hr{suffix}"] = projection.shape
    wrong = [name for name in expected if tuple(found[name]) != expected[name]]
    if hidden == 0 or weight_ih.shape[0] != 4 * hidden or wrong:
        shapes = ", ".join(f"'{name}' {tuple(shape)}" for name, shape in found.items())
        layout = (
            "weight_ih (4H, input), weight_hh (4H, H) (or (4H, P) with weight_hr (P, H)), "
            "bias_ih and bias_hh (4H,)"
        )
        raise ValueError(
            f"Argument `state_dict` does not hold torch.nn.LSTM weights: found {shapes}; an "
            f"LSTM layer has {layout} (e.g. torch.nn.GRU's weight_ih is (3H, input))."
        )
    weights = [weight_ih.T, weight_hh.T]
    if has_bias:
        weights.append(biases[f"bias_ih{suffix}"] + biases[f"bias_hh{suffix}"])
    if projection is not None:
        weights.append(projection.T)
    return [np.ascontiguousarray(weight) for weight in weights]

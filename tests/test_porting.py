"""weights_from_torch_lstm checks every shape against torch.nn.LSTM's layout."""

import re

import numpy as np
import pytest

import keras_lstm_variants as klv


def _lstm_dict(hidden=4, features=3, proj=None, bias=True):
    rng = np.random.default_rng(0)
    width = proj or hidden
    weights = {
        "weight_ih_l0": rng.normal(size=(4 * hidden, features)),
        "weight_hh_l0": rng.normal(size=(4 * hidden, width)),
    }
    if bias:
        weights["bias_ih_l0"] = rng.normal(size=4 * hidden)
        weights["bias_hh_l0"] = rng.normal(size=4 * hidden)
    if proj:
        weights["weight_hr_l0"] = rng.normal(size=(proj, hidden))
    return weights


def test_gru_state_dict_with_hidden_a_multiple_of_four_is_refused():
    # torch.nn.GRU(3, 8): weight_ih (24, 3) = (4 * 6, 3): the row count alone looks like an LSTM.
    rng = np.random.default_rng(1)
    gru = {
        "weight_ih_l0": rng.normal(size=(24, 3)),
        "weight_hh_l0": rng.normal(size=(24, 8)),
        "bias_ih_l0": rng.normal(size=24),
        "bias_hh_l0": rng.normal(size=24),
    }
    with pytest.raises(ValueError, match=r"'weight_hh_l0' \(24, 8\).*torch.nn.GRU"):
        klv.weights_from_torch_lstm(gru)


def test_torch_gru_module_is_refused():
    torch = pytest.importorskip("torch")
    module = torch.nn.GRU(3, 8, batch_first=True)
    with pytest.raises(ValueError, match=r"does not hold torch\.nn\.LSTM weights"):
        klv.weights_from_torch_lstm(module)
    with pytest.raises(ValueError, match=r"does not hold torch\.nn\.LSTM weights"):
        klv.weights_from_torch_lstm(module.state_dict())


@pytest.mark.parametrize(
    "name, shape",
    [
        ("bias_ih_l0", (12,)),
        ("bias_hh_l0", (16, 1)),
        ("weight_hh_l0", (16, 5)),
        ("weight_ih_l0", (12, 3)),
        ("weight_ih_l0", (16,)),
        ("weight_hr_l0", (2, 5)),
    ],
)
def test_any_shape_off_the_lstm_layout_is_refused_naming_it(name, shape):
    weights = _lstm_dict(proj=2)
    weights[name] = np.zeros(shape)
    with pytest.raises(ValueError, match=f"'{name}' {re.escape(str(shape))}"):
        klv.weights_from_torch_lstm(weights)


def test_one_bias_without_the_other_is_refused():
    weights = _lstm_dict()
    del weights["bias_hh_l0"]
    with pytest.raises(ValueError, match=r"'bias_hh_l0' \(0,\)"):
        klv.weights_from_torch_lstm(weights)


@pytest.mark.parametrize("proj, bias", [(None, True), (2, True), (None, False), (3, False)])
def test_lstm_layouts_still_convert(proj, bias):
    weights = _lstm_dict(proj=proj, bias=bias)
    converted = klv.weights_from_torch_lstm(weights)
    layer = klv.LSTM(4, proj_units=proj, use_bias=bias)
    layer.build((2, 5, 3))
    assert [w.shape for w in converted] == [tuple(w.shape) for w in layer.weights]
    layer.set_weights(converted)
    np.testing.assert_array_equal(converted[0], weights["weight_ih_l0"].T)
    if bias:
        np.testing.assert_allclose(
            converted[2], weights["bias_ih_l0"] + weights["bias_hh_l0"], rtol=0, atol=0
        )

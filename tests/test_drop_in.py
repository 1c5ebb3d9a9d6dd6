"""``klv.LSTM``/``klv.GRU`` take every argument of ``keras.layers.LSTM``/``GRU``, the kernel
choices (``implementation``, ``use_cudnn``) included, and give the stock layer's outputs."""

import keras
import numpy as np
import pytest

import keras_lstm_variants as klv

PAIRS = [(klv.LSTM, keras.layers.LSTM), (klv.GRU, keras.layers.GRU)]


@pytest.mark.parametrize("ours, stock", PAIRS, ids=["lstm", "gru"])
@pytest.mark.parametrize(
    "choice",
    [{"implementation": 1}, {"implementation": 2}, {"use_cudnn": False}, {"use_cudnn": "auto"}],
    ids=str,
)
def test_stock_kernel_choices_are_taken(ours, stock, choice):
    x = np.random.default_rng(0).standard_normal((3, 6, 5)).astype("float32")
    theirs = stock(4, return_sequences=True, **choice)
    theirs(x)
    layer = ours(4, return_sequences=True, **choice)
    layer(x)
    weights = [
        np.random.default_rng(i).normal(0, 0.5, w.shape).astype("float32")
        for i, w in enumerate(theirs.get_weights())
    ]
    theirs.set_weights(weights)
    layer.set_weights(weights)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)),
        keras.ops.convert_to_numpy(theirs(x)),
        atol=1e-5,
    )


@pytest.mark.parametrize("ours", [klv.LSTM, klv.GRU], ids=["lstm", "gru"])
@pytest.mark.parametrize(
    "argument, value", [("use_cudnn", True), ("implementation", 3), ("use_cudnn", "yes")]
)
def test_bad_kernel_choice_names_the_argument(ours, argument, value):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        ours(4, **{argument: value})


def test_only_the_drop_ins_take_kernel_choices():
    with pytest.raises(ValueError, match="implementation"):
        klv.PeepholeLSTM(4, implementation=1)

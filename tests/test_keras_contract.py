"""What a Keras user expects of the layers beyond the equations: ``klv.LSTM``/``klv.GRU`` take
every argument of ``keras.layers.LSTM``/``GRU`` (the kernel choices ``implementation`` and
``use_cudnn`` included) and give the stock layer's outputs; inputs that the backend's time loop
would fail on obscurely (no time steps, a mask of another shape) are refused by name."""

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


LAYERS = [klv.LSTM, klv.GRU, klv.PeepholeLSTM, klv.MinGRU, klv.SLSTM, klv.MLSTM]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda c: c.__name__)
def test_no_time_steps_is_refused(layer):
    x = np.zeros((2, 0, 3), "float32")
    with pytest.raises(ValueError, match="at least one time step"):
        layer(4)(x)


@pytest.mark.parametrize("layer", LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("mask_shape", [(2, 4), (3, 5), (2, 5, 1)], ids=str)
def test_mask_of_another_shape_is_refused(layer, mask_shape):
    x = np.zeros((2, 5, 3), "float32")
    with pytest.raises(ValueError, match=r"`mask` must have shape \(batch, time\)"):
        layer(4)(x, mask=np.ones(mask_shape, bool))


@pytest.mark.parametrize("layer", LAYERS, ids=lambda c: c.__name__)
def test_a_mask_of_the_right_shape_is_used(layer):
    """The check lets a right mask through, and it takes effect: trailing padding is ignored."""
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype("float32")
    net = layer(4)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    masked = keras.ops.convert_to_numpy(net(x, mask=mask))
    cut = keras.ops.convert_to_numpy(net(x[:1, :3]))
    np.testing.assert_allclose(masked[:1], cut, atol=1e-6)

"""The layers take ``keras.layers.LSTM``'s (``GRU``'s) arguments in its positional order.

``klv.LSTM(4, "relu")`` is ``keras.layers.LSTM(4, "relu")``: every positional argument of the
stock layer, passed positionally, gives the same configuration and the same predictions (weights
copied). A variant's own leading arguments come second, as in its cell (``SLSTM(8, 4)``: four
heads), and a non-bool where a bool belongs is refused naming the argument.
"""

import inspect

import keras
import numpy as np
import pytest

import keras_lstm_variants as klv

UNITS, FEATURES, TIME, BATCH = 4, 3, 6, 3

#: A non-default value for every positional argument of the stock layers (after ``units``).
VALUES = {
    "activation": "softsign",
    "recurrent_activation": "hard_sigmoid",
    "use_bias": True,
    "kernel_initializer": "he_normal",
    "recurrent_initializer": "glorot_normal",
    "bias_initializer": "ones",
    "unit_forget_bias": False,
    "kernel_regularizer": "l2",
    "recurrent_regularizer": "l1",
    "bias_regularizer": "l2",
    "activity_regularizer": "l2",
    "kernel_constraint": "non_neg",
    "recurrent_constraint": "unit_norm",
    "bias_constraint": "max_norm",
    "dropout": 0.1,
    "recurrent_dropout": 0.2,
    "seed": 3,
    "return_sequences": True,
    "return_state": True,
    "go_backwards": True,
    "stateful": True,
    "unroll": True,
    "reset_after": False,
    "use_cudnn": False,
}


def stock_positional(stock):
    """The stock layer's positional arguments after ``units``, from the installed Keras."""
    parameters = list(inspect.signature(stock.__init__).parameters.values())[2:]
    return [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.name in VALUES]


def outputs(layer, x, state):
    result = layer(x, initial_state=state)
    return [
        keras.ops.convert_to_numpy(r)
        for r in (result if isinstance(result, (list, tuple)) else [result])
    ]


@pytest.mark.parametrize(
    "ours, stock", [(klv.LSTM, keras.layers.LSTM), (klv.GRU, keras.layers.GRU)]
)
def test_every_stock_positional_argument_binds_as_in_the_stock_layer(ours, stock):
    names = stock_positional(stock)
    assert names[-2:] == ["reset_after" if stock is keras.layers.GRU else "unroll", "use_cudnn"]
    args = [VALUES[name] for name in names]
    mine, theirs = ours(UNITS, *args), stock(UNITS, *args)
    assert mine.use_cudnn is False
    config, expected = mine.get_config(), theirs.get_config()
    for key, value in expected.items():
        if key not in ("name", "use_cudnn"):
            assert config[key] == value, key
    default = stock(UNITS).get_config()
    for name in names:  # each one reached its place, a value other than the default
        if name in default and name != "use_bias":
            assert expected[name] != default[name], name
            assert config[name] == expected[name], name
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    states = 2 if stock is keras.layers.LSTM else 1
    state = [rng.normal(0.0, 0.5, (BATCH, UNITS)).astype("float32") for _ in range(states)]
    mine.build((BATCH, TIME, FEATURES))
    theirs.build((BATCH, TIME, FEATURES))
    weights = [rng.normal(0.0, 0.5, w.shape).astype("float32") for w in theirs.get_weights()]
    theirs.set_weights(weights)
    mine.set_weights(weights)
    got, want = outputs(mine, x, state), outputs(theirs, x, state)
    assert len(got) == len(want) == 1 + states  # return_state
    assert got[0].shape == (BATCH, TIME, UNITS)  # return_sequences
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    losses = sorted(float(keras.ops.convert_to_numpy(v)) for v in mine.losses)
    expected_losses = sorted(float(keras.ops.convert_to_numpy(v)) for v in theirs.losses)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    assert len(losses) >= 4  # kernel, recurrent and bias regularizers, activity per output


@pytest.mark.parametrize(
    "ours, stock", [(klv.LSTM, keras.layers.LSTM), (klv.GRU, keras.layers.GRU)]
)
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_second_positional_argument_is_the_activation(ours, stock, activation):
    mine, theirs = ours(UNITS, activation), stock(UNITS, activation)
    assert mine.return_sequences is False
    rng = np.random.default_rng(1)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    mine.build(x.shape)
    theirs.build(x.shape)
    weights = [rng.normal(0.0, 0.5, w.shape).astype("float32") for w in theirs.get_weights()]
    theirs.set_weights(weights)
    mine.set_weights(weights)
    got, want = keras.ops.convert_to_numpy(mine(x)), keras.ops.convert_to_numpy(theirs(x))
    assert got.shape == (BATCH, UNITS)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "ours, stock", [(klv.LSTM, keras.layers.LSTM), (klv.GRU, keras.layers.GRU)]
)
def test_the_signature_shows_the_stock_order_and_defaults(ours, stock):
    mine = inspect.signature(ours).parameters
    theirs = inspect.signature(stock).parameters
    names = ["units", *stock_positional(stock)]
    assert list(mine)[: len(names)] == names
    for name in names[1:]:
        assert mine[name].default == theirs[name].default, name


def test_a_variant_takes_its_cells_leading_arguments_second():
    assert klv.SLSTM(8, 4).num_heads == klv.SLSTMCell(8, 4).num_heads == 4
    assert klv.SLSTM(8, 2, "exp").forget_activation == "exp"
    assert klv.MLSTM(8, 2).num_heads == klv.MLSTMCell(8, 2).num_heads == 2
    assert klv.PeepholeLSTM(UNITS, ("forget",)).peepholes == ("forget",)
    assert klv.CIFGLSTM(UNITS, ("output",)).peepholes == ("output",)
    layer = klv.GreffLSTM(64, "NIG")
    assert layer.variant == "NIG" and layer.return_sequences is False
    assert klv.MinGRU(UNITS, False).log_space is False
    # after them, the stock order: PeepholeLSTM's activation after its four own arguments
    peephole = klv.PeepholeLSTM(UNITS, ("input",), "ones", None, None, "relu")
    assert peephole.activation is keras.activations.relu
    assert klv.GreffLSTM(UNITS, "NP", "relu").activation is keras.activations.relu
    assert klv.SLSTM(UNITS, 2, "exp", "softsign").activation is keras.activations.softsign
    # a minimal layer has no activation: its stock order skips it
    assert klv.MinGRU(UNITS, True, False).use_bias is False


def test_the_layer_config_round_trips_whatever_the_binding():
    layer = klv.PeepholeLSTM(UNITS, ("forget",), "ones", None, None, "relu", return_sequences=True)
    clone = klv.PeepholeLSTM.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_too_many_or_doubled_positional_arguments_are_refused():
    names = klv.LSTM.positional_arguments()
    with pytest.raises(TypeError, match="at most"):
        klv.LSTM(UNITS, *([None] * (len(names) + 1)))
    with pytest.raises(TypeError, match="`activation`"):
        klv.LSTM(UNITS, "relu", activation="tanh")


FLAGS = {
    klv.LSTM: (
        "return_sequences",
        "return_state",
        "go_backwards",
        "stateful",
        "unroll",
        "use_bias",
        "unit_forget_bias",
        "layer_norm",
    ),
    klv.GRU: ("return_sequences", "use_bias", "reset_after", "layer_norm"),
    klv.PeepholeLSTM: ("go_backwards", "unit_forget_bias"),
    klv.MinGRU: ("return_state", "log_space", "use_bias"),
    klv.MLSTM: ("stateful", "parallel", "use_bias"),
    klv.SLSTM: ("unroll", "use_bias"),
}


@pytest.mark.parametrize("value", ["yes", 1, None])
@pytest.mark.parametrize(
    "klass, name",
    [(klass, name) for klass, names in FLAGS.items() for name in names],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_a_non_bool_flag_is_refused_naming_it(klass, name, value):
    with pytest.raises(ValueError, match=f"`{name}`"):
        klass(UNITS, **{name: value})


@pytest.mark.parametrize("record", klv.registry.records(), ids=lambda r: r.name)
def test_the_layer_shows_its_cells_arguments(record):
    layer = record.layer(UNITS)
    cell = layer.cell
    for name in (cell.arguments() - set(cell.refused_arguments)) | set(cell.layout_keys):
        assert getattr(layer, name) is getattr(cell, name), name
    with pytest.raises(AttributeError):
        layer.units = 3

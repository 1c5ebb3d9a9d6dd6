"""The sequence layers: equal to Keras's own LSTM/GRU, to ``keras.layers.RNN(cell)``, and usable
everywhere Keras layers go (wrappers, ``.keras`` files, configs, XLA, mixed precision)."""

import keras
import numpy as np
import pytest
from helpers import (
    BATCH,
    FEATURES,
    TIME,
    UNITS,
    VARIANT_CASES,
    data,
    float32_tolerance,
    make_cell,
    make_layer,
    non_default_settings_of_every_cell,
    padding_mask,
    randomize,
    run_with_gradients,
    to_numpy,
    xla_training,
)

import keras_lstm_variants as klv

TOLERANCE = float32_tolerance(1e-5, 1e-5)


def build(layer, x):
    layer.build(x.shape)
    return layer


def assert_same_run(ours, theirs, x, states, mask=None, training=False):
    results, grads = run_with_gradients(ours, x, states, mask, training)
    expected, expected_grads = run_with_gradients(theirs, x, states, mask, training)
    assert len(results) == len(expected) and len(grads) == len(expected_grads)
    for a, b in zip(results + grads, expected + expected_grads, strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)


# ------------------------------------------------------- against keras.layers


def keras_twin(case, **options):
    """Keras's own layer for ``case`` (its reference implementation, never cuDNN)."""
    if case == "lstm":
        return keras.layers.LSTM(UNITS, use_cudnn=False, **options)
    return keras.layers.GRU(
        UNITS, reset_after=case == "gru-reset-after", use_cudnn=False, **options
    )


KERAS_CASES = ["lstm", "gru-reset-after", "gru-reset-before"]
SCENARIOS = {
    "sequences-and-state": {"return_sequences": True, "return_state": True},
    "last-output": {},
    "masked": {"return_sequences": True, "return_state": True, "mask": True},
    "go-backwards": {"return_sequences": True, "return_state": True, "go_backwards": True},
    "go-backwards-masked": {"return_state": True, "go_backwards": True, "mask": True},
    "unrolled-masked": {
        "return_sequences": True,
        "return_state": True,
        "unroll": True,
        "mask": True,
    },
    # Input dropout alone: Keras draws one mask per sequence from the same seed stream.
    "input-dropout-training": {
        "return_sequences": True,
        "dropout": 0.5,
        "seed": 3,
        "training": True,
    },
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("case", KERAS_CASES)
def test_equals_keras_layer(case, scenario):
    """Outputs, final states and gradients (inputs, initial states, weights) within 1e-5.

    The mask pads one row on the right and one on the left; initial states are non-zero.
    """
    options = dict(SCENARIOS[scenario])
    mask = padding_mask() if options.pop("mask", False) else None
    training = options.pop("training", False)
    x, states = data(case)
    ours = build(make_layer(case, **options), x)
    theirs = build(keras_twin(case, **options), x)
    theirs.set_weights(randomize(ours))
    assert_same_run(ours, theirs, x, states, mask, training)


@pytest.mark.parametrize("case", KERAS_CASES)
def test_stateful_equals_keras_layer(case):
    """Two consecutive calls carry the state over exactly as Keras does; reset clears it."""
    x, _ = data(case)
    second, _ = data(case, seed=2)
    ours = build(make_layer(case, stateful=True, return_sequences=True), x)
    theirs = build(keras_twin(case, stateful=True, return_sequences=True), x)
    theirs.set_weights(randomize(ours))
    first_outputs = to_numpy(ours(x))
    np.testing.assert_allclose(first_outputs, to_numpy(theirs(x)), **TOLERANCE)
    np.testing.assert_allclose(to_numpy(ours(second)), to_numpy(theirs(second)), **TOLERANCE)
    assert len(ours.states) == len(theirs.states)
    for a, b in zip(ours.states, theirs.states, strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)
    ours.reset_state()
    np.testing.assert_allclose(to_numpy(ours(x)), first_outputs, **TOLERANCE)


@pytest.mark.parametrize("case", KERAS_CASES)
def test_masking_bidirectional_stack_equals_keras(case):
    """Masking -> Bidirectional(layer) -> layer: the mask propagates through both as in Keras."""

    def model(make):
        inputs = keras.Input((TIME, FEATURES))
        masked = keras.layers.Masking(0.0)(inputs)
        hidden = keras.layers.Bidirectional(make(return_sequences=True))(masked)
        return keras.Model(inputs, make(return_state=True)(hidden))

    ours = model(lambda **options: make_layer(case, **options))
    theirs = model(lambda **options: keras_twin(case, **options))
    theirs.set_weights(randomize(ours))
    x, _ = data(case)
    x[padding_mask() == 0] = 0.0
    results = to_numpy(ours(x))
    for a, b in zip(results, to_numpy(theirs(x)), strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)


def test_trained_keras_lstm_loads_into_lstm():
    """The weights of a trained ``keras.layers.LSTM`` give the same predictions in ``klv.LSTM``."""
    series = np.sin(np.linspace(0.0, 12 * np.pi, 200)) + 0.1 * np.random.default_rng(0).normal(
        size=200
    )
    windows = np.stack([series[t : t + 11] for t in range(0, 180, 2)]).astype("float32")
    x, y = windows[:, :10, None], windows[:, 10:]

    def model(layer):
        return keras.Sequential([keras.Input((10, 1)), layer, keras.layers.Dense(1)])

    keras.utils.set_random_seed(0)
    trained = model(keras.layers.LSTM(8, use_cudnn=False))
    trained.compile(keras.optimizers.Adam(0.02), "mse")
    history = trained.fit(x, y, epochs=4, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < history[0]
    ours = model(klv.LSTM(8))
    ours.set_weights(trained.get_weights())
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(trained(x)), **TOLERANCE)


# ------------------------------------------- the layers' own loop == RNN(cell)


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("case", VARIANT_CASES)
def test_layer_loop_equals_rnn_of_cell(case, go_backwards):
    """The layers' own time loop (``VariantRNN.inner_loop``, which calls the cell's methods
    directly) equals ``keras.layers.RNN(cell)``:
    forward and gradients, with a padded mask and non-zero initial states."""
    options = {"return_sequences": True, "return_state": True, "go_backwards": go_backwards}
    x, states = data(case)
    layer = build(make_layer(case, **options), x)
    plain = build(keras.layers.RNN(make_cell(case), **options), x)
    plain.set_weights(randomize(layer))
    assert type(layer).inner_loop is not keras.layers.RNN.inner_loop
    assert_same_run(layer, plain, x, states, padding_mask())


# ---------------------------------------------------------------- contract


def wrapper_model(case):
    """The variant as a layer, in Bidirectional (layer and RNN(cell)) and in StackedRNNCells."""
    inputs = keras.Input((TIME, FEATURES))
    outputs = [
        make_layer(case, return_sequences=True)(inputs),
        keras.layers.Bidirectional(make_layer(case))(inputs),
        keras.layers.Bidirectional(keras.layers.RNN(make_cell(case), return_sequences=True))(
            inputs
        ),
        keras.layers.RNN(keras.layers.StackedRNNCells([make_cell(case), make_cell(case)]))(inputs),
    ]
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("case", VARIANT_CASES)
def test_wrappers_and_keras_file_round_trip(case, tmp_path):
    model = wrapper_model(case)
    randomize(model)
    x, _ = data(case)
    outputs = to_numpy(model(x))
    shapes = [(BATCH, TIME, UNITS), (BATCH, 2 * UNITS), (BATCH, TIME, 2 * UNITS), (BATCH, UNITS)]
    assert [o.shape for o in outputs] == shapes
    assert all(np.isfinite(o).all() for o in outputs)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for before, after in zip(model.layers, loaded.layers, strict=True):
        assert type(before) is type(after)
        assert [w.shape for w in before.weights] == [w.shape for w in after.weights]
    for before, after in zip(outputs, to_numpy(loaded(x)), strict=True):
        np.testing.assert_array_equal(before, after)


def non_default_settings(case):
    settings = non_default_settings_of_every_cell()
    if case.startswith("gru"):
        return settings
    settings["unit_forget_bias"] = False
    if case != "lstm":
        settings["peephole_initializer"] = "ones"
    return settings


@pytest.mark.parametrize("case", VARIANT_CASES)
def test_config_round_trip(case):
    """get_config/from_config reproduce cells and layers, so they compute the same thing."""
    settings = non_default_settings(case)
    cell = make_cell(case, **settings)
    cell_clone = type(cell).from_config(cell.get_config())
    assert cell_clone.get_config() == cell.get_config()

    layer = make_layer(case, return_sequences=True, go_backwards=True, **settings)
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    for name in ("units", "dropout", "recurrent_dropout", "go_backwards"):
        assert getattr(clone, name) == getattr(layer, name)
    for name in ("peepholes", "reset_after", "unit_forget_bias"):
        assert getattr(clone.cell, name, None) == getattr(layer.cell, name, None)

    x, states = data(case)
    for rnn in (
        keras.layers.RNN(cell, return_sequences=True),
        keras.layers.RNN(cell_clone, return_sequences=True),
    ):
        build(rnn, x)
    build(layer, x)
    build(clone, x)
    clone.set_weights(randomize(layer))
    np.testing.assert_array_equal(
        to_numpy(layer(x, initial_state=states)), to_numpy(clone(x, initial_state=states))
    )
    cell_clone.set_weights(randomize(cell))
    np.testing.assert_array_equal(
        to_numpy(cell(x[:, 0], states)[0]), to_numpy(cell_clone(x[:, 0], states)[0])
    )


@pytest.mark.parametrize("case", VARIANT_CASES)
def test_jit_compile_training(case):
    """Training steps compiled by XLA (``model.compile(jit_compile=True)``) run and change the
    weights; the XLA forward equals eager."""
    x, states = data(case)
    layer = build(make_layer(case, return_sequences=True), x)
    randomize(layer)
    before = [w.copy() for w in layer.get_weights()]
    eager = to_numpy(layer(x, initial_state=states))
    compiled, losses = xla_training(layer, x, states, target=0.0)
    np.testing.assert_allclose(compiled, eager, **TOLERANCE)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert all(not np.array_equal(a, b) for a, b in zip(before, layer.get_weights(), strict=True))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("case", VARIANT_CASES)
def test_mixed_precision(case, policy):
    """Variables stay float32, the computation runs in the low precision, close to float32."""
    options = {"return_sequences": True, "return_state": True}
    x, states = data(case)
    mixed = build(make_layer(case, **options), x)
    full = build(make_layer(case, dtype="float32", **options), x)
    full.set_weights(randomize(mixed, std=0.3))
    assert mixed.cell.compute_dtype == policy.compute_dtype
    assert all(w.dtype == "float32" for w in mixed.weights)
    results = mixed(x, initial_state=states)
    for low, high in zip(results, to_numpy(full(x, initial_state=states)), strict=True):
        assert keras.backend.standardize_dtype(low.dtype) == policy.compute_dtype
        np.testing.assert_allclose(to_numpy(low).astype("float32"), high, atol=5e-2)

"""The JAX training fast path (keras_lstm_variants/fast.py) equals the per-step loop.

Against ``keras.layers.RNN(cell)`` on the same weights: outputs, final states and the gradients
of the inputs, the (non-zero) initial states and every weight, for every cell configuration it
takes, with masks padded at the start, in the middle and at the end, and ``go_backwards``;
float32 at 1e-5 relative. Then a compiled ``fit``, ``Bidirectional`` and ``stateful`` against
the fallback, the cases it must leave to the fallback, and forward-mode autodiff.
"""

import types

import keras
import numpy as np
import pytest
from helpers import count_calls, randomize, with_keras_rnn

import keras_lstm_variants as klv
from keras_lstm_variants import fast

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="the fast path is JAX's (jax.custom_vjp)"
)

BATCH, TIME, FEATURES, UNITS = 3, 7, 4, 5
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}

#: Every configuration the fast path takes: (layer class, arguments).
CONFIGS = {
    "lstm": (klv.LSTM, {}),
    "lstm-options": (
        klv.LSTM,
        {"proj_units": 3, "proj_clip": 0.4, "cell_clip": 0.8, "use_bias": False},
    ),
    "lstm-proj": (klv.LSTM, {"proj_units": 3, "cell_clip": 0.8}),
    "peephole-all": (klv.PeepholeLSTM, {}),
    "peephole-i": (klv.PeepholeLSTM, {"peepholes": ("input",)}),
    "peephole-fo": (klv.PeepholeLSTM, {"peepholes": ("forget", "output")}),
    "cifg": (klv.CIFGLSTM, {}),
    "cifg-fo": (klv.CIFGLSTM, {"peepholes": ("forget", "output"), "use_bias": False}),
    **{f"greff-{v}": (klv.GreffLSTM, {"variant": v}) for v in klv.GREFF_VARIANTS},
    "greff-FGR-proj": (klv.GreffLSTM, {"variant": "FGR", "proj_units": 3, "cell_clip": 0.8}),
}


def padded_mask(time=TIME):
    """Row 0 padded at the start, row 1 in the middle, row 2 at the end."""
    mask = np.ones((BATCH, time), dtype=bool)
    mask[0, :2] = mask[1, 3:5] = mask[2, -2:] = False
    return mask


@pytest.fixture
def calls(monkeypatch):
    """How often the layers took ``fast.rnn`` (each trace counts)."""
    return count_calls(monkeypatch, fast, "rnn")


def run(layer, x, states, mask, seed=7, training=True):
    """Outputs, states and the gradients of a random linear probe of them with respect to
    ``x``, the initial states and every trainable weight."""
    import jax

    probes = []

    def loss(values, x, states):
        results, _ = layer.stateless_call(
            values,
            [v.value for v in layer.non_trainable_variables],
            x,
            initial_state=list(states),
            mask=mask,
            training=training,
        )
        generator = np.random.default_rng(seed)
        probes[:] = [generator.normal(size=r.shape).astype("float32") for r in results]
        return sum((r * p).sum() for r, p in zip(results, probes, strict=True)), results

    values = [v.value for v in layer.trainable_variables]
    (_, results), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
        values, x, states
    )
    return [np.asarray(a) for a in jax.tree.leaves((results, grads))]


#: (config, go_backwards, masking): every config with the padded mask both ways; no mask and
#: ``zero_output_for_mask`` (what Bidirectional sets) on a few.
RUNS = [(config, backwards, "padded") for config in CONFIGS for backwards in (False, True)] + [
    (config, *run)
    for config in ("lstm", "lstm-options", "greff-FGR")
    for run in ((False, "none"), (True, "padded-zeros"))
]


def assert_equals_keras_rnn(
    layer_class, arguments, calls, time=TIME, masking="padded", training=True, seed=1, **options
):
    """``layer_class(UNITS, **arguments, **options)`` takes ``fast.rnn`` and equals
    ``keras.layers.RNN`` over its cell (:func:`run`: outputs, states and every gradient) on
    ``time`` steps of random inputs, non-zero initial states and, unless ``masking`` is
    "none", :func:`padded_mask`."""
    options = {"return_sequences": True, "return_state": True, **options}
    shape = (BATCH, time, FEATURES)
    layer, reference = with_keras_rnn(layer_class, shape, units=UNITS, **options, **arguments)
    assert [id(v) for v in reference.trainable_variables] == [
        id(v) for v in layer.trainable_variables
    ]
    generator = np.random.default_rng(seed)
    x = generator.normal(size=shape).astype("float32")
    states = [generator.normal(0, 0.5, (BATCH, s)).astype("float32") for s in layer.state_size]
    mask = None if masking == "none" else padded_mask(time)
    got = run(layer, x, states, mask, training=training)
    assert calls, "the layer took fast.rnn"
    expected = run(reference, x, states, mask, training=training)
    assert len(got) == len(expected) == 2 + 2 * len(states) + len(layer.trainable_variables)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)


@pytest.mark.parametrize(("config", "go_backwards", "masking"), RUNS)
def test_equals_keras_rnn(config, go_backwards, masking, calls):
    layer_class, arguments = CONFIGS[config]
    zeros = masking == "padded-zeros"
    assert_equals_keras_rnn(
        layer_class,
        arguments,
        calls,
        masking=masking,
        go_backwards=go_backwards,
        zero_output_for_mask=zeros,
    )


#: The accelerator's loop (``fast.scan_supported``): the custom-gradient configurations above
#: and the cells it takes without that gradient.
SCAN_CONFIGS = {
    **{name: CONFIGS[name] for name in ("lstm", "lstm-options", "peephole-fo", "greff-FGR")},
    "lstm-layer_norm": (klv.LSTM, {"layer_norm": True, "proj_units": 3}),
    "gru": (klv.GRU, {}),
    "gru-reset-before": (klv.GRU, {"reset_after": False, "use_bias": False}),
    "cifg-inference-dropout": (klv.CIFGLSTM, {"dropout": 0.3, "recurrent_dropout": 0.2}),
}


#: The unroll in these tests: the code is the same for any unroll, and 3 traces faster than 8.
UNROLL = 3


@pytest.fixture
def accelerator(monkeypatch):
    """JAX as on a GPU: ``fast.accelerator()`` says yes, so the scans unroll ``UNROLL`` steps.
    (On an H100 these tests passed with the real 8 over 19 steps: docs/speed-gpu.md.)"""
    monkeypatch.setattr(fast, "accelerator", lambda: True)
    monkeypatch.setattr(fast, "ACCELERATOR_UNROLL", UNROLL)
    assert fast.unroll() == UNROLL


#: (config, go_backwards, training): each config forwards in training (dropout there steps the
#: cell) and backwards in inference, the LSTM and the GRU all four ways.
SCAN_RUNS = [(config, False, True) for config in SCAN_CONFIGS if "dropout" not in config]
SCAN_RUNS += [(config, True, False) for config in SCAN_CONFIGS]
SCAN_RUNS += [(config, True, True) for config in ("lstm", "gru")]
SCAN_RUNS += [(config, False, False) for config in ("lstm", "gru")]


@pytest.mark.parametrize(("config", "go_backwards", "training"), SCAN_RUNS)
def test_accelerator_loop_equals_keras_rnn(config, go_backwards, training, accelerator, calls):
    """Two whole unrolled iterations and a remainder of 2 steps."""
    layer_class, arguments = SCAN_CONFIGS[config]
    time = 2 * fast.ACCELERATOR_UNROLL + 2
    assert_equals_keras_rnn(
        layer_class, arguments, calls, time, training=training, seed=5, go_backwards=go_backwards
    )


@pytest.mark.parametrize(
    "case",
    ["cpu", "tensorflow", "zoneout", "dropout", "unroll", "unknown time", "subclass", "slstm"],
)
def test_accelerator_loop_fallback_cases(case, monkeypatch):
    monkeypatch.setattr(fast, "accelerator", lambda: case != "cpu")
    if case == "tensorflow":
        monkeypatch.setattr(fast.backend, "backend", lambda: "tensorflow")
    arguments = {"zoneout": {"zoneout": 0.1}, "dropout": {"recurrent_dropout": 0.1}}
    arguments["unroll"] = {"unroll": True}
    layer = (klv.SLSTM if case == "slstm" else klv.GRU)(UNITS, **arguments.get(case, {}))
    if case == "subclass":
        layer = types.SimpleNamespace(cell=SubclassCell(UNITS), unroll=False)
    sequences = types.SimpleNamespace(shape=(BATCH, None if case == "unknown time" else TIME, 4))
    assert not fast.scan_supported(layer, sequences, True)


def test_accelerator_inference_keeps_forward_mode(accelerator, calls):
    """Inference on the accelerator's loop has no custom gradient: ``jax.jvp`` works."""
    import jax

    layer = klv.LSTM(UNITS)
    x = np.random.default_rng(4).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    layer.build(x.shape)
    values = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]

    def tangent():
        output = lambda x: layer.stateless_call(values, fixed, x)[0]  # noqa: E731
        return jax.jvp(output, (x,), (np.ones_like(x),))[1]

    got = tangent()
    assert calls, "inference took the accelerator's loop"
    fast.ENABLED = False
    try:
        np.testing.assert_allclose(got, tangent(), **TOLERANCE)
    finally:
        fast.ENABLED = True


def fallback(monkeypatch):
    monkeypatch.setattr(fast, "supported", lambda *a: False)


@pytest.mark.parametrize("config", ["peephole-fo", "greff-FGR"])
def test_compiled_fit_equals_fallback(config, monkeypatch, calls):
    layer_class, arguments = CONFIGS[config]
    generator = np.random.default_rng(2)
    x = generator.normal(size=(6, TIME, FEATURES)).astype("float32")
    x[0, :2] = x[3, 3:5] = x[4, -2:] = 0.0  # padding, for Masking
    y = generator.normal(size=(6, TIME, 2)).astype("float32")

    def fitted():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                keras.layers.Masking(0.0),
                layer_class(UNITS, return_sequences=True, **arguments),
                keras.layers.Dense(2),
            ]
        )
        model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
        randomize(model)
        model.fit(x, y, batch_size=3, epochs=3, shuffle=False, verbose=0)
        return model.get_weights()

    fast_weights = fitted()
    assert calls, "fit took the fast path"
    fallback(monkeypatch)
    for a, b in zip(fast_weights, fitted(), strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)


def test_bidirectional_and_stateful_equal_fallback(monkeypatch, calls):
    import jax

    generator = np.random.default_rng(3)
    x = generator.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    mask = padded_mask()
    bidirectional = keras.layers.Bidirectional(klv.PeepholeLSTM(UNITS, return_sequences=True))
    bidirectional.build((BATCH, TIME, FEATURES))
    randomize(bidirectional)
    stateful = klv.GreffLSTM(UNITS, variant="FGR", stateful=True, return_state=True)
    stateful.build((BATCH, TIME, FEATURES))
    randomize(stateful)

    def results():
        def loss(values):
            fixed = [v.value for v in bidirectional.non_trainable_variables]
            output, _ = bidirectional.stateless_call(values, fixed, x, mask=mask, training=True)
            return (output * output).sum(), output

        values = [v.value for v in bidirectional.trainable_variables]
        (_, output), grads = jax.value_and_grad(loss, has_aux=True)(values)
        stateful.reset_states()
        stateful(x, training=True)  # the second call starts from the first one's states
        return [output, *grads, *stateful(x, mask=mask, training=True)]

    got = results()
    assert len(calls) == 4, "both directions and both stateful calls took the fast path"
    fallback(monkeypatch)
    for a, b in zip(got, results(), strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)


class SubclassCell(klv.LSTMCell):
    pass


@pytest.mark.parametrize(
    "case",
    [
        "training=False",
        "disabled",
        "tensorflow",
        "layer_norm",
        "zoneout",
        "dropout",
        "recurrent_dropout",
        "mixed_float16",
        "unroll",
        "unknown time",
        "subclass",
        "gru",
        "slstm",
    ],
)
def test_fallback_cases(case, monkeypatch):
    arguments = {
        "layer_norm": {"layer_norm": True},
        "zoneout": {"zoneout": 0.1},
        "dropout": {"dropout": 0.1},
        "recurrent_dropout": {"recurrent_dropout": 0.1},
        "mixed_float16": {"dtype": "mixed_float16"},
        "unroll": {"unroll": True},
    }.get(case, {})
    layer_class = {"gru": klv.GRU, "slstm": klv.SLSTM}.get(case, klv.PeepholeLSTM)
    layer = layer_class(UNITS, **arguments)
    sequences = types.SimpleNamespace(shape=(BATCH, None if case == "unknown time" else TIME, 4))
    if case == "subclass":
        layer = types.SimpleNamespace(cell=SubclassCell(UNITS), unroll=False)
    elif case == "disabled":
        monkeypatch.setattr(fast, "ENABLED", False)
    elif case == "tensorflow":
        monkeypatch.setattr(fast.backend, "backend", lambda: "tensorflow")
    assert not fast.supported(layer, sequences, case != "training=False")


def test_forward_mode():
    """Forward mode works with ``training=False`` (never the fast path) and with the path
    off; on it, JAX refuses with its own error (documented in fast.py and docs/speed.md)."""
    import jax

    layer = klv.LSTM(UNITS)
    x = np.random.default_rng(4).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    layer.build(x.shape)
    values = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]

    def output(x, training):
        return layer.stateless_call(values, fixed, x, training=training)[0]

    def jvp(training):
        return jax.jvp(lambda x: output(x, training), (x,), (np.ones_like(x),))[1]

    tangent = jvp(training=False)
    with pytest.raises(TypeError, match="custom_vjp"):
        jvp(training=True)
    fast.ENABLED = False
    try:
        np.testing.assert_allclose(jvp(training=True), tangent, **TOLERANCE)
    finally:
        fast.ENABLED = True

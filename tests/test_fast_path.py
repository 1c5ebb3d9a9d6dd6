"""The ``jax-scan`` kernel (keras_lstm_variants/kernels/jax_scan.py) equals the per-step loop.

Against ``keras.layers.RNN(cell)`` on the same weights: outputs, final states and the gradients
of the inputs, the (non-zero) initial states and every weight, for every cell configuration it
takes, with masks padded at the start, in the middle and at the end, and ``go_backwards``;
float32 at 1e-5 relative. Then a compiled ``fit``, ``Bidirectional`` and ``stateful`` against
Keras's loop, the cases it must leave to that loop (and the reasons it gives), and
forward-mode autodiff.
"""

import types

import keras
import numpy as np
import pytest
from helpers import (
    ChangesStep,
    KeepsStep,
    assert_all_close,
    assert_equals_keras_rnn,
    count_calls,
    kernels_decide_as,
    over,
    randomize,
    refusal_options,
    refusal_reasons,
)

import keras_lstm_variants as klv
from keras_lstm_variants import kernels
from keras_lstm_variants.kernels import jax_scan

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="the kernel is JAX's (jax.custom_vjp)"
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
    """How often the layers took ``jax_scan.rnn`` (each trace counts)."""
    return count_calls(monkeypatch, jax_scan, "rnn")


#: (config, go_backwards, masking): every config with the padded mask both ways; no mask and
#: ``zero_output_for_mask`` (what Bidirectional sets) on a few.
RUNS = [(config, backwards, "padded") for config in CONFIGS for backwards in (False, True)] + [
    (config, *run)
    for config in ("lstm", "lstm-options", "greff-FGR")
    for run in ((False, "none"), (True, "padded-zeros"))
]


def assert_takes_it(layer_class, arguments, calls, time=TIME, masking="padded", **options):
    """``layer_class(UNITS, **arguments, **options)`` takes ``jax_scan.rnn`` and equals
    ``keras.layers.RNN`` over its cell (outputs, states and every gradient) on ``time`` steps
    of random inputs, non-zero initial states and, unless ``masking`` is "none",
    :func:`padded_mask`; in training unless ``options`` says otherwise."""
    options = {"training": True, **options}
    mask = None if masking == "none" else padded_mask(time)
    shape = (BATCH, time, FEATURES)
    assert_equals_keras_rnn(
        layer_class, shape, TOLERANCE, mask=mask, units=UNITS, **arguments, **options
    )
    assert calls, "the layer took jax_scan.rnn"


@pytest.mark.parametrize(("config", "go_backwards", "masking"), RUNS)
def test_equals_keras_rnn(config, go_backwards, masking, calls):
    layer_class, arguments = CONFIGS[config]
    zeros = masking == "padded-zeros"
    assert_takes_it(
        layer_class,
        arguments,
        calls,
        masking=masking,
        go_backwards=go_backwards,
        zero_output_for_mask=zeros,
    )


#: The accelerator's loop: the custom-gradient configurations above
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
    """JAX as on a GPU: ``jax_scan.accelerator()`` says yes, so the scans unroll ``UNROLL``
    steps. (On an H100 these tests passed with the real 8 over 19 steps: docs/speed-gpu.md.)"""
    monkeypatch.setattr(jax_scan, "accelerator", lambda: True)
    monkeypatch.setattr(jax_scan, "ACCELERATOR_UNROLL", UNROLL)
    assert jax_scan.unroll() == UNROLL


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
    time = 2 * jax_scan.ACCELERATOR_UNROLL + 2
    assert_takes_it(
        layer_class, arguments, calls, time, training=training, seed=5, go_backwards=go_backwards
    )


def why_not(layer, time=TIME, training=True):
    """Why ``loop="auto"`` does not take ``jax-scan`` for ``layer`` on ``(BATCH, time, 4)``
    inputs: it cannot (``why_not``), or gains nothing there (``auto_skips``); ``None``: it
    takes it."""
    sequences = types.SimpleNamespace(shape=(BATCH, time, 4))
    call = kernels.Call(sequences, [], training=training, unroll=layer.unroll)
    return jax_scan.why_not(layer, call) or jax_scan.auto_skips(layer, call)


#: (case, a few words of the reason the accelerator's loop gives)
ACCELERATOR_FALLBACKS = {
    "cpu": "additive-recurrence",  # a GRU in training on a CPU: the custom gradient's
    "tensorflow": "backend is tensorflow",
    **refusal_reasons("zoneout", "recurrent_dropout", "unroll", "unknown time"),
    "overriding subclass": "separable-input",
    "slstm": "separable-input",
}


@pytest.mark.parametrize("case", ACCELERATOR_FALLBACKS)
def test_accelerator_loop_fallback_cases(case, monkeypatch):
    monkeypatch.setattr(jax_scan, "accelerator", lambda: case != "cpu")
    if case == "tensorflow":
        kernels_decide_as(monkeypatch, "tensorflow")
    layer = (klv.SLSTM if case == "slstm" else klv.GRU)(UNITS, **refusal_options(case))
    if case == "overriding subclass":
        layer = over(ChangesStep)(UNITS)
    reason = why_not(layer, None if case == "unknown time" else TIME)
    assert reason is not None and ACCELERATOR_FALLBACKS[case] in reason


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
    with kernels.forced("keras"):
        np.testing.assert_allclose(got, tangent(), **TOLERANCE)


@pytest.mark.parametrize("config", ["peephole-fo", "greff-FGR"])
def test_compiled_fit_equals_keras_loop(config, calls):
    layer_class, arguments = CONFIGS[config]
    generator = np.random.default_rng(2)
    x = generator.normal(size=(6, TIME, FEATURES)).astype("float32")
    x[0, :2] = x[3, 3:5] = x[4, -2:] = 0.0  # padding, for Masking
    y = generator.normal(size=(6, TIME, 2)).astype("float32")

    def fitted(loop):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                keras.layers.Masking(0.0),
                layer_class(UNITS, return_sequences=True, loop=loop, **arguments),
                keras.layers.Dense(2),
            ]
        )
        model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
        randomize(model)
        model.fit(x, y, batch_size=3, epochs=3, shuffle=False, verbose=0)
        return model.get_weights()

    fast_weights = fitted("jax-scan")
    assert calls, "fit took the kernel"
    count = len(calls)
    for a, b in zip(fast_weights, fitted("keras"), strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)
    assert len(calls) == count


def test_bidirectional_and_stateful_equal_keras_loop(calls):
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
    assert len(calls) == 4, "both directions and both stateful calls took the kernel"
    with kernels.forced("keras"):
        expected = results()
    assert len(calls) == 4
    assert_all_close(got, expected, TOLERANCE)


def test_subclass_keeps_the_kernel(calls):
    """A user's subclass of ``LSTMCell`` that keeps the step keeps the kernel (and equals
    ``keras.layers.RNN`` over it); one that overrides ``transition`` is stepped by Keras's loop,
    which computes its own step (not the parent's)."""
    assert_takes_it(over(KeepsStep), {}, calls)
    count = len(calls)
    layer_class = over(ChangesStep)
    assert "separable-input" in why_not(layer_class(UNITS))
    assert_equals_keras_rnn(
        layer_class, (BATCH, TIME, FEATURES), TOLERANCE, units=UNITS, training=True
    )
    assert len(calls) == count, "the overriding subclass was stepped"
    with pytest.raises(ValueError, match="ChangesStep does not declare 'separable-input'"):
        layer_class(UNITS, loop="jax-scan")(np.zeros((BATCH, TIME, FEATURES)), training=True)


#: (case, a few words of the reason): what the custom gradient leaves to Keras's loop on a CPU.
FALLBACKS = {
    "training=False": "inference",
    "tensorflow": "backend is tensorflow",
    **refusal_reasons(
        "layer_norm", "zoneout", "dropout", "recurrent_dropout", "mixed_float16", "unroll"
    ),
    **refusal_reasons("unknown time"),
    "overriding subclass": "ChangesStep does not declare",
    "gru": "GRUCell does not declare 'additive-recurrence'",
    "slstm": "SLSTMCell does not declare",
}


@pytest.mark.parametrize("case", FALLBACKS)
def test_fallback_cases(case, monkeypatch):
    layer_class = {"gru": klv.GRU, "slstm": klv.SLSTM}.get(case, klv.PeepholeLSTM)
    if case == "overriding subclass":
        layer_class = over(ChangesStep)
    layer = layer_class(UNITS, **refusal_options(case))
    assert why_not(klv.PeepholeLSTM(UNITS)) is None
    if case == "tensorflow":
        kernels_decide_as(monkeypatch, "tensorflow")
    time = None if case == "unknown time" else TIME
    reason = why_not(layer, time, training=case != "training=False")
    assert reason is not None and FALLBACKS[case] in reason


def test_forward_mode():
    """Forward mode works with ``training=False`` (never the custom gradient) and in Keras's
    loop; on the kernel, JAX refuses with its own error (documented in
    kernels/jax_scan.py)."""
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
    with kernels.forced("keras"):
        np.testing.assert_allclose(jvp(training=True), tangent, **TOLERANCE)

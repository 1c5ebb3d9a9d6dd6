"""The kernel registry (keras_lstm_variants/kernels/): the layers' ``loop`` argument, what
``loop="auto"`` picks on each backend, refusals that name their reason, ``explain_kernels``,
``kernels.forced`` (a context variable: one thread's choice leaves another's alone), the
capabilities a user's subclass keeps or loses, and gate tracing's observer hook from two
threads at once.

The numerics of each kernel against ``keras.layers.RNN(cell)`` are in test_fast_path.py
(``jax-scan``), test_eager_path.py (``torch-eager``, ``torch-fused``, ``tf-block``),
test_minimal.py (``min-scan``) and test_xlstm.py (``mlstm-parallel``).
"""

import threading

import keras
import numpy as np
import pytest
from helpers import (
    BATCH,
    FEATURES,
    TIME,
    UNITS,
    ChangesStep,
    KeepsStep,
    over,
    randomize,
    reference_step,
)

import keras_lstm_variants as klv
from keras_lstm_variants import kernels

BACKEND = keras.backend.backend()


def inputs(seed=0, batch=BATCH, time=TIME):
    return np.random.default_rng(seed).normal(size=(batch, time, FEATURES)).astype("float32")


#: What ``loop="auto"`` picks in training on this machine's CPU, per backend:
#: (layer class, arguments) -> {backend: kernel}.
AUTO = [
    (klv.LSTM, {}, {"tensorflow": "keras", "jax": "jax-scan", "torch": "torch-fused"}),
    (klv.GRU, {}, {"tensorflow": "keras", "jax": "keras", "torch": "torch-fused"}),
    (klv.PeepholeLSTM, {}, {"tensorflow": "keras", "jax": "jax-scan", "torch": "torch-eager"}),
    (
        klv.LSTM,
        {"layer_norm": True},
        {"tensorflow": "keras", "jax": "keras", "torch": "torch-eager"},
    ),
    (klv.LSTM, {"zoneout": 0.1}, {"tensorflow": "keras", "jax": "keras", "torch": "keras"}),
    (klv.SLSTM, {}, {"tensorflow": "keras", "jax": "keras", "torch": "keras"}),
    (klv.MinGRU, {}, dict.fromkeys(("tensorflow", "jax", "torch"), "min-scan")),
    (klv.MLSTM, {}, dict.fromkeys(("tensorflow", "jax", "torch"), "mlstm-parallel")),
    (klv.MLSTM, {"parallel": False}, dict.fromkeys(("tensorflow", "jax", "torch"), "keras")),
]


@pytest.mark.parametrize(("layer_class", "arguments", "picks"), AUTO)
def test_auto_picks_per_backend(layer_class, arguments, picks):
    layer = layer_class(UNITS, **arguments)
    report = klv.explain_kernels(layer, inputs(), training=True)
    assert report.auto == report.runs == picks[BACKEND], str(report)
    assert report["keras"] is None
    assert list(report) == list(kernels.KERNELS) and list(kernels.KERNELS)[-1] == "keras"


def test_explain_kernels_says_why_not():
    report = klv.explain_kernels(klv.LSTM(UNITS, layer_norm=True), inputs(), training=True)
    text = str(report)
    lines = dict(line.split(": ", 1) for line in text.splitlines())
    assert lines["keras"] == "yes"
    assert lines["min-scan"] == "no: LSTMCell has no coefficients()"
    assert lines["auto picks"] == report.auto
    inference = klv.explain_kernels(klv.LSTM(UNITS, layer_norm=True), inputs())
    if BACKEND == "tensorflow":  # no fused kernel computes layer norm
        assert inference["tf-block"] == "layer_norm is on"
    else:
        assert inference["tf-block"] == f"the backend is {BACKEND}, not tensorflow"
    if BACKEND == "jax":  # it can run (without its custom gradient), auto skips it on a CPU
        assert report["jax-scan"] is None
        assert lines["jax-scan"] == "can run, auto skips it: layer_norm is on"
    else:
        assert lines["jax-scan"] == f"no: the backend is {BACKEND}, not jax"
    if BACKEND == "torch":
        assert report["torch-fused"] == "layer_norm is on" and report["torch-eager"] is None
    with pytest.raises(ValueError, match="`inputs` must be shaped"):
        klv.explain_kernels(klv.LSTM(UNITS), np.zeros((BATCH, FEATURES)))
    with pytest.raises(ValueError, match="`layer` must be"):
        klv.explain_kernels(keras.layers.Dense(3), inputs())


def test_tf_block_is_opt_in_only():
    """``auto`` never picks ``tf-block`` (TFLite cannot convert the op); asked by name on
    TensorFlow, the vanilla LSTM runs it in inference."""
    layer = klv.LSTM(UNITS)
    report = klv.explain_kernels(layer, inputs())
    assert report.auto != "tf-block"
    if BACKEND == "tensorflow":
        assert report["tf-block"] is None
        assert report.auto_skips["tf-block"] == "opt-in only (loop='tf-block')"
        named = klv.explain_kernels(klv.LSTM(UNITS, loop="tf-block"), inputs())
        assert named.runs == "tf-block" and named.auto == "keras"


def test_unknown_loop_is_refused_listing_the_valid_ones():
    for loop in ("fast", "", None, "KERAS"):
        with pytest.raises(ValueError, match=r"'auto', 'min-scan', .*'keras'"):
            klv.LSTM(UNITS, loop=loop)
    with pytest.raises(ValueError, match="argument `loop`"):
        klv.MinGRU(UNITS, loop="cudnn")
    with pytest.raises(ValueError, match="argument `loop`"):
        with kernels.forced("nope"):
            pass


@pytest.mark.parametrize(
    ("layer_class", "arguments", "loop", "reason"),
    [
        (klv.LSTM, {}, "torch-fused" if BACKEND != "torch" else "jax-scan", "the backend is"),
        (klv.LSTM, {"layer_norm": True}, "tf-block", None),
        (klv.PeepholeLSTM, {}, "torch-fused", None),
        (klv.GRU, {}, "min-scan", "GRUCell has no coefficients()"),
        (klv.LSTM, {}, "mlstm-parallel", "LSTMCell has no parallel()"),
        (klv.MLSTM, {"parallel": False}, "mlstm-parallel", "the layer has parallel=False"),
    ],
)
def test_a_named_loop_that_cannot_run_raises_its_reason(layer_class, arguments, loop, reason):
    """Never a silent fallback: the call raises ``ValueError`` with the reason
    ``explain_kernels`` gives."""
    layer = layer_class(UNITS, loop=loop, **arguments)
    x = inputs()
    expected = klv.explain_kernels(layer, x)[loop]
    assert expected is not None and (reason is None or reason in expected)
    with pytest.raises(ValueError, match=f"loop='{loop}' cannot run this call") as error:
        layer(x)
    assert expected in str(error.value)


@pytest.mark.parametrize("layer_class", [klv.LSTM, klv.MinGRU, klv.MLSTM, klv.GRU])
def test_keras_loop_equals_auto(layer_class):
    """``loop="keras"`` runs Keras's own loop: the same numbers as the automatic choice."""
    x = inputs(1)
    mask = np.ones((BATCH, TIME), bool)
    mask[0, -2:] = mask[1, :2] = False
    results = []
    for loop in ("auto", "keras"):
        layer = layer_class(UNITS, loop=loop, return_sequences=True, return_state=True)
        layer.build(x.shape)
        randomize(layer)
        results.append(layer(x, mask=mask))
    assert klv.explain_kernels(layer, x).runs == "keras"
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-6
        )


def test_loop_survives_config_and_keras_file(tmp_path):
    layer = klv.MinGRU(UNITS, loop="keras")
    assert layer.get_config()["loop"] == "keras"
    assert klv.MinGRU.from_config(layer.get_config()).loop == "keras"
    assert klv.LSTM(UNITS).get_config()["loop"] == "auto"
    first = klv.PeepholeLSTM(UNITS, loop="tf-block", return_sequences=True)
    model = keras.Sequential([keras.Input((TIME, FEATURES)), first, layer])
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.loop for layer in loaded.layers] == ["tf-block", "keras"]
    config = dict(klv.LSTM(UNITS).get_config())
    config.pop("loop")  # a config saved before the argument existed
    assert klv.LSTM.from_config(config).loop == "auto"


def test_forced_is_per_thread():
    """``kernels.forced`` in one thread leaves another thread's choice alone (a context
    variable, not a module global), and ends with its block."""
    layer = klv.MinGRU(UNITS)
    x = inputs()
    entered, checked = threading.Event(), threading.Event()
    seen = {}

    def exporter():
        with kernels.forced("keras"):
            seen["exporter"] = klv.explain_kernels(layer, x).runs
            entered.set()
            checked.wait(30)

    def trainer():
        entered.wait(30)
        seen["trainer"] = klv.explain_kernels(layer, x).runs
        checked.set()

    threads = [threading.Thread(target=exporter), threading.Thread(target=trainer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert seen == {"exporter": "keras", "trainer": "min-scan"}
    assert klv.explain_kernels(layer, x).runs == "min-scan"
    with kernels.forced("keras"):
        assert klv.explain_kernels(klv.LSTM(UNITS, loop="tf-block"), x).runs == "keras"
        with kernels.forced("auto"):
            assert klv.explain_kernels(layer, x).runs == "min-scan"
        assert klv.explain_kernels(layer, x).runs == "keras"


class MinGRUChangesStep(klv.MinGRUCell):
    def transition(self, z_x, states, training=False):
        gates, (h,) = super().transition(z_x, states, training)
        return gates, [0.5 * h]


def test_subclass_keeps_or_loses_capabilities():
    """Kernels read what the cell declares: a subclass that keeps the step keeps every
    capability (and kernel); one that overrides ``transition`` loses them, and Keras's loop
    then runs its own step."""
    assert KeepsStep.capabilities == klv.LSTMCell.capabilities
    assert ChangesStep.capabilities == frozenset()
    x = inputs(2)
    kept = klv.explain_kernels(over(KeepsStep)(UNITS), x, training=True)
    stock = klv.explain_kernels(klv.LSTM(UNITS), x, training=True)
    assert {name: reason is None for name, reason in kept.items()} == {
        name: reason is None for name, reason in stock.items()
    }
    assert kept.auto == stock.auto
    changed = klv.explain_kernels(over(ChangesStep)(UNITS), x, training=True)
    assert changed.auto == "keras"
    if BACKEND == "torch":
        assert "ChangesStep does not declare 'separable-input'" in changed["torch-fused"]
        assert "ChangesStep does not declare 'separable-input'" in changed["torch-eager"]
    minimal = klv.explain_kernels(over(MinGRUChangesStep, klv.MinGRU)(UNITS), x)
    assert minimal["min-scan"] == "MinGRUChangesStep overrides transition() without coefficients()"
    assert minimal.auto == "keras"
    layer = over(ChangesStep)(UNITS, return_sequences=True)
    layer.build(x.shape)
    randomize(layer)
    reference = keras.layers.RNN(layer.cell, return_sequences=True)
    expected = keras.ops.convert_to_numpy(reference(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-6)
    stock = klv.LSTM(UNITS, return_sequences=True)
    stock.build(x.shape)
    stock.set_weights(layer.get_weights())
    assert not np.allclose(keras.ops.convert_to_numpy(stock(x)), expected)


def test_observer_sees_and_may_change_the_call():
    """The hook: an observer sees each call of the loop (sequences, initial state, mask) and
    may return a changed call, which the layer then runs; outside the block nothing."""
    layer = klv.GRU(UNITS, return_sequences=True)
    x = inputs(3)
    mask = np.ones((BATCH, TIME), bool)
    mask[:, -3:] = False
    seen = []

    def observer(rnn, call):
        seen.append((rnn, tuple(call.sequences.shape), len(call.initial_state), call.mask))
        return call.replace(mask=keras.ops.convert_to_tensor(mask))

    with kernels.observing(observer):
        observed = keras.ops.convert_to_numpy(layer(x))
    assert [(s[0], s[1], s[2], s[3]) for s in seen] == [(layer, x.shape, 1, None)]
    np.testing.assert_allclose(
        observed, keras.ops.convert_to_numpy(layer(x, mask=mask)), rtol=1e-6, atol=1e-7
    )
    layer(x)
    assert len(seen) == 1


@pytest.mark.parametrize("wrapped", [False, True], ids=["variant-layer", "keras-rnn"])
def test_tracing_from_two_threads_gives_each_its_own_result(wrapped):
    """Two threads trace the same model at once, each with its own input and mask: each gets
    the trace of its own input (checked against the NumPy oracle), and the model is left as
    it was (no attribute of the layer removed; a user's own ``inner_loop`` still runs)."""
    layer = klv.LSTM(UNITS, return_sequences=True, name="lstm")
    if wrapped:
        layer = keras.layers.RNN(klv.LSTMCell(UNITS), return_sequences=True, name="lstm")
    model = keras.Sequential([keras.Input((TIME, FEATURES)), layer])
    weights = randomize(model)
    step = reference_step("lstm", weights)
    batches = {name: inputs(seed) for name, seed in (("a", 10), ("b", 11))}
    masks = {"a": None, "b": np.ones((BATCH, TIME), bool)}
    masks["b"][1, :3] = False
    barrier = threading.Barrier(2, timeout=60)
    results, errors = {}, []

    def observer(rnn, call):  # both threads inside their tracing block before either traces
        barrier.wait()

    def trace(name):
        try:
            with kernels.observing(observer):
                results[name] = klv.trace_gates(model, batches[name], mask=masks[name])
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=trace, args=(name,)) for name in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    for name, x in batches.items():
        expected = _oracle(step, x, masks[name])
        for key, value in expected.items():
            np.testing.assert_allclose(results[name]["lstm"][key], value, atol=1e-5, err_msg=key)
    if wrapped:
        assert getattr(vars(layer)["inner_loop"], "observed", False)
    assert "inner_loop" not in vars(layer) or wrapped
    klv.trace_gates(model, batches["a"])  # again, once more through the installed adapter


def _oracle(step, x, mask):
    """``{gate or state: (batch, time, units)}`` of the NumPy oracle (NaN where masked)."""
    states = (np.zeros((BATCH, UNITS)), np.zeros((BATCH, UNITS)))
    mask = np.ones(x.shape[:2], bool) if mask is None else mask
    steps = []
    for t in range(x.shape[1]):
        gates, new_states = step(x[:, t].astype(np.float64), states)
        steps.append({**gates, "c": new_states[1], "h": new_states[0]})
        keep = mask[:, t, None]
        states = tuple(np.where(keep, n, s) for n, s in zip(new_states, states, strict=True))
    trace = {key: np.stack([s[key] for s in steps], 1) for key in steps[0]}
    for value in trace.values():
        value[~mask] = np.nan
    return trace

"""CONTRIBUTING.md's "Adding a variant", proven: a new variant in a few lines, outside the package.

The variant: an LSTM whose output gate reads only the new cell state, through a peephole,

    i = sigma(W_i x + U_i h + b_i),  f = sigma(W_f x + U_f h + b_f),  g = tanh(W_g x + U_g h + b_g)
    c = f * c_prev + i * g,          o = sigma(p_o * c + b_o),        h = o * tanh(c)

declared as a cell (its equations, its weights through the build hook), registered with one
``registry.add`` line (which builds its sequence layer), and run through the layer contract
against the NumPy oracle below: ``keras.layers.RNN``, the sequence layer with a mask and initial
states, ``Bidirectional``, ``.keras`` and ``.weights.h5`` round trips, ``jit_compile``, mixed
precision against float32, ``trace_gates`` and the streaming SavedModel export. No package
file is edited.

Its cell overrides ``transition`` and declares the capabilities that still hold
(``ADDITIVE_RECURRENCE``, ``SEPARABLE_INPUT``): the kernels of the running backend step it
(``jax-scan`` on JAX, ``torch-eager`` on PyTorch), equal to ``loop="keras"`` in outputs, final
states and gradients; on TensorFlow ``explain_kernels`` gives each kernel's reason. A subclass
that overrides the step without declaring capabilities is refused by those kernels, with the
reason.
"""

import re

import keras
import numpy as np
import pytest
from helpers import count_calls, kernels_decide_as, run_with_gradients

import keras_lstm_variants as klv
from keras_lstm_variants import kernels
from keras_lstm_variants.cells.base import ADDITIVE_RECURRENCE, SEPARABLE_INPUT
from keras_lstm_variants.kernels import jax_scan


# ------------------------------------------------------------------------- the variant
@keras.saving.register_keras_serializable(package="test_adding_a_variant")
class OutputPeepholeLSTMCell(klv.LSTMCell):
    """An LSTM whose output gate reads the new cell state only: o = sigma(p_o * c + b_o)."""

    blocks = ("input", "forget", "candidate")  # no output block: o reads no x, no h
    gate_names = ("input", "forget", "candidate", "output")
    capabilities = frozenset({ADDITIVE_RECURRENCE, SEPARABLE_INPUT})

    def build_more(self, input_shape):
        super().build_more(input_shape)
        self.output_peephole = self.add_weight(shape=(self.units,), name="output_peephole")
        self.output_bias = self.add_weight(
            shape=(self.units,), name="output_bias", initializer="zeros"
        )

    def transition(self, z_x, states, training=False):
        h_prev, c_prev = states
        z_i, z_f, z_g = self.preactivations(z_x, h_prev, training)
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        g = self.activation(z_g)
        c = self.cell_update(f * c_prev + i * g, c_prev, training)
        o = self.recurrent_activation(self.output_peephole * c + self.output_bias)
        h = self.hidden(o, c, h_prev, training)
        return {"input": i, "forget": f, "candidate": g, "output": o}, [h, c]


@keras.saving.register_keras_serializable(package="test_adding_a_variant")
class UndeclaredOutputPeepholeLSTMCell(OutputPeepholeLSTMCell):
    """The same step, overridden without declaring ``capabilities``: it declares none, so the
    kernels that step ``transition(project(x))`` themselves refuse it."""

    def transition(self, z_x, states, training=False):
        return super().transition(z_x, states, training)


@pytest.fixture(scope="module")
def variant():
    record = klv.registry.add("output_peephole", OutputPeepholeLSTMCell)
    yield record
    klv.registry.remove("output_peephole")


@pytest.fixture(scope="module")
def undeclared():
    record = klv.registry.add("undeclared_output_peephole", UndeclaredOutputPeepholeLSTMCell)
    yield record
    klv.registry.remove("undeclared_output_peephole")


# --------------------------------------------------------------------------- the oracle
UNITS, FEATURES, TIME, BATCH = 4, 3, 6, 3


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def oracle(x, h, c, weights, mask=None, backwards=False):
    """The equations above in NumPy, float64: outputs, final h, c and every gate."""
    kernel, recurrent, bias, p_o, b_o = (np.asarray(w, "float64") for w in weights)
    steps = range(x.shape[1])[::-1] if backwards else range(x.shape[1])
    outputs, gates = [], {name: [] for name in ("input", "forget", "candidate", "output")}
    out = np.zeros_like(h)
    for t in steps:
        z = x[:, t] @ kernel + h @ recurrent + bias
        z_i, z_f, z_g = np.split(z, 3, axis=-1)
        i, f, g = sigmoid(z_i), sigmoid(z_f), np.tanh(z_g)
        c_new = f * c + i * g
        o = sigmoid(p_o * c_new + b_o)
        h_new = o * np.tanh(c_new)
        for name, value in zip(gates, (i, f, g, o), strict=True):
            gates[name].append(value)
        keep = np.ones((x.shape[0], 1), bool) if mask is None else mask[:, t : t + 1]
        h, c = np.where(keep, h_new, h), np.where(keep, c_new, c)
        out = np.where(keep, h_new, 0.0)  # Keras's zero output at a masked step
        outputs.append(out)
    gates = {name: np.stack(values, 1) for name, values in gates.items()}
    return np.stack(outputs, 1), h, c, gates


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, TIME, FEATURES))
    h = rng.normal(0.0, 0.5, (BATCH, UNITS))
    c = rng.normal(0.0, 0.5, (BATCH, UNITS))
    return x, h, c


def random_weights(layer, seed=1):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0.0, 0.5, w.shape) for w in layer.get_weights()]
    layer.set_weights([w.astype("float32") for w in weights])
    return weights


def f32(*arrays):
    return [np.asarray(a, "float32") for a in arrays]


# ---------------------------------------------------------------------------- the tests
def test_the_record_and_the_built_layer(variant):
    assert klv.registry.get("output_peephole") is variant
    layer = variant.layer(UNITS, return_sequences=True)
    assert type(layer).__name__ == "OutputPeepholeLSTM"
    assert keras.saving.get_registered_name(variant.layer) == (
        "test_adding_a_variant>OutputPeepholeLSTM"
    )
    assert layer.units == UNITS and layer.unit_forget_bias is True  # the cell's arguments
    layer.build((BATCH, TIME, FEATURES))
    shapes = [tuple(w.shape) for w in layer.weights]
    assert shapes == [(FEATURES, 12), (UNITS, 12), (12,), (UNITS,), (UNITS,)]
    layout = layer.cell.layout()
    assert layout["class"] == "test_adding_a_variant>OutputPeepholeLSTMCell"
    # the contract's defaults: every product with a matrix weight, two flops a multiply-add
    assert layer.cell.flops_per_step(BATCH) == 2 * BATCH * (FEATURES + UNITS) * 3 * UNITS
    assert layer.cell.gate_meanings["output"] == klv.LSTMCell.gate_meanings["output"]


def test_rnn_of_the_cell_equals_the_oracle(variant):
    x, h, c = data()
    layer = keras.layers.RNN(variant.cell(UNITS), return_sequences=True, return_state=True)
    layer.build((BATCH, TIME, FEATURES))
    weights = random_weights(layer)
    got = [keras.ops.convert_to_numpy(t) for t in layer(*f32(x), initial_state=f32(h, c))]
    want = oracle(x, h, c, weights)[:3]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_sequence_layer_with_a_mask_and_bidirectional_equal_the_oracle(variant):
    x, h, c = data(2)
    mask = np.ones((BATCH, TIME), bool)
    mask[0, 4:] = False  # padded at the end
    mask[1, :2] = False  # ... and at the start
    layer = variant.layer(UNITS, return_sequences=True, return_state=True)
    layer.build((BATCH, TIME, FEATURES))
    weights = random_weights(layer)
    got = layer(*f32(x), initial_state=f32(h, c), mask=mask)
    got = [keras.ops.convert_to_numpy(t) for t in got]
    want = oracle(x, h, c, weights, mask)[:3]
    np.testing.assert_allclose(
        np.where(mask[..., None], got[0], 0.0), want[0], rtol=1e-5, atol=1e-5
    )
    for g, w in zip(got[1:], want[1:], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)

    both = keras.layers.Bidirectional(variant.layer(UNITS, return_sequences=True))
    both.build((BATCH, TIME, FEATURES))
    weights = random_weights(both, 3)
    zeros = np.zeros((BATCH, UNITS))
    forward = oracle(x, zeros, zeros, weights[:5])[0]
    backward = oracle(x, zeros, zeros, weights[5:], backwards=True)[0][:, ::-1]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(both(*f32(x))),
        np.concatenate([forward, backward], -1),
        rtol=1e-5,
        atol=1e-5,
    )


def model_of(variant, **options):
    return keras.Sequential(
        [keras.Input((None, FEATURES)), variant.layer(UNITS, return_sequences=True, **options)]
    )


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_saving_round_trips(variant, suffix, tmp_path):
    x, _, _ = data(4)
    model = model_of(variant)
    random_weights(model)
    path = tmp_path / f"m{suffix}"
    if suffix == ".keras":
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded.layers[0]) is variant.layer
    else:
        model.save_weights(path)
        loaded = model_of(variant)
        loaded.load_weights(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # another meaning is refused: the same weight shapes under LSTMCell's gate blocks
    other = keras.Sequential(
        [keras.Input((None, FEATURES)), keras.layers.RNN(klv.CIFGLSTMCell(UNITS))]
    )
    mine = keras.Sequential([keras.Input((None, FEATURES)), keras.layers.RNN(variant.cell(UNITS))])
    mine.save_weights(tmp_path / "rnn.weights.h5")
    with pytest.raises(ValueError, match="OutputPeepholeLSTMCell"):
        other.load_weights(tmp_path / "rnn.weights.h5")


def test_jit_compile_and_mixed_precision_against_float32(variant):
    x, _, _ = data(5)
    model = model_of(variant)
    weights = random_weights(model)
    zeros = np.zeros((BATCH, UNITS))
    want = oracle(x, zeros, zeros, weights)[0]
    model.compile(jit_compile=True)
    np.testing.assert_allclose(model.predict(f32(x)[0], verbose=0), want, rtol=1e-5, atol=1e-5)
    half = model_of(variant, dtype="mixed_float16")
    half.set_weights(model.get_weights())
    got = keras.ops.convert_to_numpy(half(f32(x)[0]))
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype("float64"), want, atol=1e-2)


def test_trace_gates_equals_the_oracle(variant):
    x, _, _ = data(6)
    model = keras.Sequential([keras.Input((TIME, FEATURES)), variant.layer(UNITS, name="v")])
    weights = random_weights(model)
    zeros = np.zeros((BATCH, UNITS))
    _, _, _, gates = oracle(x, zeros, zeros, weights)
    trace = klv.trace_gates(model, f32(x)[0])["v"]
    assert list(trace)[:4] == ["input", "forget", "candidate", "output"]
    for name, values in gates.items():
        np.testing.assert_allclose(trace[name], values, rtol=1e-5, atol=1e-5)


def test_streaming_savedmodel_equals_the_oracle(variant, tmp_path):
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("SavedModel export runs on the TensorFlow backend")
    x, _, _ = data(7)
    model = model_of(variant)
    weights = random_weights(model)
    zeros = np.zeros((BATCH, UNITS))
    want = oracle(x, zeros, zeros, weights)[0]
    path = klv.export_saved_model(model, tmp_path / "m", streaming=True)
    loaded = tf.saved_model.load(str(path))
    np.testing.assert_allclose(
        loaded.serving_default(f32(x)[0])["output"], want, rtol=1e-5, atol=1e-5
    )
    states = loaded.initial_state(BATCH)
    for t in range(TIME):
        result = loaded.step(f32(x[:, t])[0], **states)
        states = {k: v for k, v in result.items() if k != "output"}
        np.testing.assert_allclose(result["output"], want[:, t], rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------- the kernels
#: The kernels that step a declared LSTM-type ``transition`` themselves, by backend (Keras's
#: loop aside). TensorFlow has none for this variant: ``tf-block`` needs ``tf-block-lstm``.
FAST_KERNELS = {"jax": ("jax-scan",), "torch": ("torch-eager",)}
#: Whether the kernel takes a mask (``torch-eager`` leaves masked calls to Keras's loop).
TAKES_MASKS = {"jax-scan": True, "torch-eager": False}
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
#: (kernel, training) for the running backend.
KERNEL_CASES = [
    (kernel, training)
    for kernel in FAST_KERNELS.get(keras.backend.backend(), ())
    for training in (True, False)
]


def declared_and_keras_loop(record, loop, **options):
    """``record.layer`` with ``loop``, and the same layer with ``loop="keras"``, both with the
    same random weights (returned too)."""
    layers = []
    for name in (loop, "keras"):
        layer = record.layer(UNITS, return_sequences=True, return_state=True, loop=name, **options)
        layer.build((BATCH, TIME, FEATURES))
        layers.append(layer)
    weights = random_weights(layers[0], 8)
    layers[1].set_weights(layers[0].get_weights())
    return *layers, weights


def test_the_declared_capabilities(variant, undeclared):
    """The variant keeps the capabilities it declares; the subclass that overrides the step
    without declaring any has none (it does not inherit its parent's)."""
    assert variant.cell.capabilities == {ADDITIVE_RECURRENCE, SEPARABLE_INPUT}
    assert UndeclaredOutputPeepholeLSTMCell.capabilities == frozenset()
    assert undeclared.cell is UndeclaredOutputPeepholeLSTMCell


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize(("kernel", "training"), KERNEL_CASES)
def test_the_kernels_equal_keras_loop_and_the_oracle(
    variant, kernel, training, go_backwards, monkeypatch
):
    """``loop=<kernel>`` equals ``loop="keras"`` on the same weights: outputs, final states
    and the gradients of the inputs, the (non-zero) initial states and every weight; both
    equal the oracle."""
    x, h, c = data(8)
    mask = None
    if TAKES_MASKS[kernel]:
        mask = np.ones((BATCH, TIME), bool)
        mask[0, 4:] = mask[1, :2] = mask[2, 2:4] = False
    fast, loop, weights = declared_and_keras_loop(variant, kernel, go_backwards=go_backwards)
    explanation = klv.explain_kernels(fast, f32(x)[0], training=training, mask=mask)
    assert explanation[kernel] is None and explanation.runs == kernel, str(explanation)
    if kernel == "jax-scan" and not training and not jax_scan.accelerator():
        assert "inference on a CPU" in explanation.auto_skips[kernel]
        assert explanation.auto == "keras"
    else:
        # jax-scan in training on a CPU: auto takes it only where the weight gradients can be
        # taken after the loop (the declared additive-recurrence), which then run here.
        assert explanation.auto == kernel, str(explanation)

    runs = count_calls(monkeypatch, kernels.KERNELS[kernel], "run")
    got = run_with_gradients(fast, *f32(x), f32(h, c), mask=mask, training=training)
    assert runs, f"loop={kernel!r} ran its kernel"
    taken = len(runs)
    want = run_with_gradients(loop, *f32(x), f32(h, c), mask=mask, training=training)
    assert len(runs) == taken, 'loop="keras" ran the kernel'
    got, want = keras.tree.flatten(got), keras.tree.flatten(want)
    assert len(got) == len(want) == 3 + 3 + len(fast.trainable_weights)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)

    outputs, h_T, c_T, _ = oracle(x, h, c, weights, mask, backwards=go_backwards)
    keep = np.ones((BATCH, TIME), bool) if mask is None else mask
    keep = keep[:, ::-1] if go_backwards else keep  # outputs come in processing order
    np.testing.assert_allclose(np.where(keep[..., None], got[0], 0.0), outputs, atol=1e-5)
    np.testing.assert_allclose(got[1], h_T, atol=1e-5)
    np.testing.assert_allclose(got[2], c_T, atol=1e-5)


@pytest.mark.parametrize(("kernel", "training"), KERNEL_CASES)
def test_an_undeclared_override_is_refused_by_the_kernels(undeclared, kernel, training):
    """The subclass that overrides the step without declaring capabilities: the kernels give
    the reason, ``loop=<kernel>`` raises it, and ``"auto"`` steps its own ``transition`` in
    Keras's loop (equal to the oracle)."""
    x, h, c = data(9)
    layer = undeclared.layer(UNITS, return_sequences=True, return_state=True)
    layer.build((BATCH, TIME, FEATURES))
    weights = random_weights(layer)
    explanation = klv.explain_kernels(layer, f32(x)[0], training=training)
    reason = "UndeclaredOutputPeepholeLSTMCell does not declare 'separable-input'"
    assert explanation[kernel] == reason
    assert explanation.auto == explanation.runs == "keras"
    got = layer(*f32(x), initial_state=f32(h, c), training=training)
    got = [keras.ops.convert_to_numpy(t) for t in got]
    for g, w in zip(got, oracle(x, h, c, weights)[:3], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    forced = undeclared.layer(UNITS, loop=kernel)
    with pytest.raises(ValueError, match=re.escape(reason)):
        forced(*f32(x), training=training)


@pytest.mark.parametrize(("kernel", "backend"), [("jax-scan", "jax"), ("torch-eager", "torch")])
def test_the_declarations_decide_the_kernels_on_any_backend(
    variant, undeclared, kernel, backend, monkeypatch
):
    """What each kernel answers on its own backend (the kernels' backend test pretends it,
    so this runs on every backend): the declared variant can run, the undeclared override
    cannot, for the reason of its missing declaration."""
    kernels_decide_as(monkeypatch, backend)
    x = np.zeros((BATCH, TIME, FEATURES), "float32")
    for training in (True, False):
        assert klv.explain_kernels(variant.layer(UNITS), x, training=training)[kernel] is None
        explanation = klv.explain_kernels(undeclared.layer(UNITS), x, training=training)
        assert "does not declare 'separable-input'" in explanation[kernel]


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's answers of the kernels"
)
@pytest.mark.parametrize("training", [True, False])
def test_on_tensorflow_keras_loop_runs_it_for_the_reasons_given(variant, undeclared, training):
    """On TensorFlow no fast kernel steps this variant, each for its reason: the JAX and
    PyTorch kernels are other backends', ``tf-block`` maps only cells declaring
    ``tf-block-lstm`` (and runs in inference only), the scan forms need their own methods."""
    x = np.zeros((BATCH, TIME, FEATURES), "float32")
    for record in (variant, undeclared):
        name = record.cell.__name__
        expected = {
            "min-scan": f"{name} has no coefficients()",
            "mlstm-parallel": f"{name} has no parallel()",
            "jax-scan": "the backend is tensorflow, not jax",
            "torch-fused": "the backend is tensorflow, not torch",
            "tf-block": "training" if training else f"{name} does not declare 'tf-block-lstm'",
            "torch-eager": "the backend is tensorflow, not torch",
            "keras": None,
        }
        explanation = klv.explain_kernels(record.layer(UNITS), x, training=training)
        assert dict(explanation) == expected
        assert explanation.auto == explanation.runs == "keras"
    with pytest.raises(ValueError, match="does not declare 'tf-block-lstm'"):
        variant.layer(UNITS, loop="tf-block")(x)

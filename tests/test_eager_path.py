"""The eager loop (keras_lstm_variants/fast.py, ``eager_rnn``) equals the per-step loop.

The torch backend takes it; its code is Keras ops, so on every backend it is forced here and
compared with ``keras.layers.RNN(cell)`` on the same weights: outputs, final states and the
gradients of the inputs, the (non-zero) initial states and every weight, in training and in
inference, forwards and with ``go_backwards``, float32 at 1e-5 relative. Then the cases it must
leave to Keras's loop, and (on torch) that the layers really take it. Last, on torch, the
PyTorch kernels of the vanilla LSTM and the GRU (``torch_rnn``) against the same reference,
and what they leave to the cell.
"""

import functools
import types

import keras
import numpy as np
import pytest
from helpers import (
    count_calls,
    float32_tolerance,
    float64_tolerance,
    randomize,
    run_with_gradients,
    with_keras_rnn,
)

import keras_lstm_variants as klv
from keras_lstm_variants import fast

BATCH, TIME, FEATURES, UNITS = 3, 6, 4, 5
TOLERANCE = float32_tolerance(1e-5, 1e-6)

#: Every cell class the loop takes, with its options.
CONFIGS = {
    "lstm": (klv.LSTM, {}),
    "lstm-options": (klv.LSTM, {"proj_units": 3, "proj_clip": 0.4, "cell_clip": 0.8}),
    "lstm-layer-norm": (klv.LSTM, {"layer_norm": True, "use_bias": False}),
    "peephole-fo": (klv.PeepholeLSTM, {"peepholes": ("forget", "output")}),
    "cifg": (klv.CIFGLSTM, {}),
    **{f"greff-{v}": (klv.GreffLSTM, {"variant": v}) for v in ("NIG", "NOAF", "FGR")},
    "gru": (klv.GRU, {}),
    "gru-reset-before": (klv.GRU, {"reset_after": False}),
    "gru-layer-norm": (klv.GRU, {"layer_norm": True}),
}


@pytest.fixture
def calls(monkeypatch):
    """How often the layers took ``fast.eager_rnn``."""
    return count_calls(monkeypatch, fast, "eager_rnn")


@pytest.fixture
def forced(monkeypatch):
    """The eager loop on any backend (the JAX training path and PyTorch's kernel off)."""
    monkeypatch.setattr(fast, "supported", lambda *a: False)
    monkeypatch.setattr(fast, "fused_supported", lambda *a: False)
    on(monkeypatch, "torch")


def on(monkeypatch, backend):
    """``fast`` decides as on ``backend`` (Keras itself stays on its own)."""
    monkeypatch.setattr(fast, "backend", types.SimpleNamespace(backend=lambda: backend))


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
@pytest.mark.parametrize("config", CONFIGS)
def test_equals_keras_rnn(config, go_backwards, training, forced, calls):
    layer_class, arguments = CONFIGS[config]
    got, expected = with_reference(layer_class, arguments, go_backwards, training)
    assert calls, "the layer took the eager loop"
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)


def with_reference(layer_class, arguments, go_backwards, training, dtype="float32", wrap=None):
    """The results and gradients (``run_with_gradients``) of ``layer_class(UNITS,
    **arguments)`` and of ``keras.layers.RNN`` over its cell, both returning sequences and
    states, on the same random inputs and non-zero initial states; each flattened. ``wrap(layer,
    x, states)``, if given, is what runs in place of the layer."""
    options = {"return_sequences": True, "return_state": True, "go_backwards": go_backwards}
    shape = (BATCH, TIME, FEATURES)
    layer, reference = with_keras_rnn(
        layer_class, shape, dtype, units=UNITS, **options, **arguments
    )
    generator = np.random.default_rng(1)
    x = generator.normal(size=(BATCH, TIME, FEATURES)).astype(dtype)
    states = [generator.normal(0, 0.5, (BATCH, s)).astype(dtype) for s in layer.state_size]
    if wrap is not None:
        layer = wrap(layer, x, states)
    return [
        keras.tree.flatten(run_with_gradients(model, x, states, training=training))
        for model in (layer, reference)
    ]


@pytest.mark.parametrize("return_sequences", [False, True])
def test_last_output_and_stateful(return_sequences, forced, calls, monkeypatch):
    """Without ``return_sequences`` the layer returns the last output; a stateful layer's
    second call starts from the first one's states, as in Keras's loop."""
    x = np.random.default_rng(2).normal(size=(BATCH, TIME, FEATURES)).astype("float32")

    def results():
        layer = klv.PeepholeLSTM(UNITS, return_sequences=return_sequences, stateful=True)
        layer.build(x.shape)
        randomize(layer)
        return [keras.ops.convert_to_numpy(layer(x)) for _ in range(2)]

    got = results()
    assert len(calls) == 2
    on(monkeypatch, "tensorflow")
    for a, b in zip(got, results(), strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)


@pytest.mark.parametrize(
    "case",
    ["disabled", "jax", "mask", "zoneout", "dropout", "recurrent_dropout", "unroll", "slstm"],
)
def test_keras_loop_cases(case, monkeypatch):
    arguments = {
        "zoneout": {"zoneout": 0.1},
        "dropout": {"dropout": 0.1},
        "recurrent_dropout": {"recurrent_dropout": 0.1},
        "unroll": {"unroll": True},
    }.get(case, {})
    layer = (klv.SLSTM if case == "slstm" else klv.PeepholeLSTM)(UNITS, **arguments)
    sequences = types.SimpleNamespace(shape=(BATCH, TIME, FEATURES))
    mask = np.ones((BATCH, TIME), bool) if case == "mask" else None
    on(monkeypatch, "jax" if case == "jax" else "torch")
    if case == "disabled":
        monkeypatch.setattr(fast, "ENABLED", False)
    assert not fast.eager_supported(layer, sequences, mask, training=True)
    if case in ("dropout", "recurrent_dropout"):  # dropout is off in inference
        assert fast.eager_supported(layer, sequences, mask, training=False)


torch_only = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's")


@torch_only
def test_torch_layers_take_it(calls, monkeypatch):
    fused = count_calls(monkeypatch, fast, "torch_rnn")
    x = np.random.default_rng(3).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    for layer_class, arguments in CONFIGS.values():
        layer_class(UNITS, **arguments)(x)
    keras.layers.Bidirectional(klv.PeepholeLSTM(UNITS))(x)
    keras.layers.Bidirectional(klv.LSTM(UNITS))(x)
    kernels = ("lstm", "gru")  # the other CONFIGS step the cell
    assert (len(calls), len(fused)) == (len(CONFIGS) - len(kernels) + 2, len(kernels) + 2)


#: The configurations PyTorch's kernels run: our LSTM and GRU without options.
FUSED = {
    "lstm": (klv.LSTM, {}, "float32"),
    "lstm-no-bias": (klv.LSTM, {"use_bias": False}, "float32"),
    "lstm-float64": (klv.LSTM, {"unit_forget_bias": False}, "float64"),
    "lstm-dropout": (klv.LSTM, {"dropout": 0.3, "recurrent_dropout": 0.3}, "float32"),
    "gru": (klv.GRU, {}, "float32"),
    "gru-no-bias": (klv.GRU, {"use_bias": False}, "float32"),
    "gru-float64": (klv.GRU, {}, "float64"),
}


@torch_only
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
@pytest.mark.parametrize("config", FUSED)
def test_torch_kernels_equal_keras_rnn(config, go_backwards, training, monkeypatch):
    layer_class, arguments, dtype = FUSED[config]
    if training and arguments.get("dropout"):
        pytest.skip("dropout in training steps the cell (test_keras_loop_cases)")
    fused = count_calls(monkeypatch, fast, "torch_rnn")
    got, expected = with_reference(layer_class, arguments, go_backwards, training, dtype)
    assert len(fused) == 1, "the layer ran PyTorch's kernel (the reference did not)"
    tolerance = TOLERANCE if dtype == "float32" else float64_tolerance(1e-10, 1e-12)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, **tolerance)


@pytest.mark.parametrize(
    "case",
    [
        "peephole",
        "cifg",
        "greff",
        "layer_norm",
        "proj_units",
        "cell_clip",
        "relu",
        "use_cudnn",
        "mixed_float16",
        "mask",
        "gru-reset-before",
        "gru-layer-norm",
        "gru-hard-sigmoid",
        "gru-use_cudnn",
    ],
)
def test_torch_kernel_cases(case, monkeypatch):
    """What PyTorch's kernels do not compute is left to the cell."""
    layer_class = {"peephole": klv.PeepholeLSTM, "cifg": klv.CIFGLSTM}.get(case, klv.LSTM)
    if case == "greff":
        layer_class = functools.partial(klv.GreffLSTM, variant="NP")  # = LSTM, but a subclass
    elif case.startswith("gru"):
        layer_class = klv.GRU
    arguments = {
        "layer_norm": {"layer_norm": True},
        "proj_units": {"proj_units": 3},
        "cell_clip": {"cell_clip": 1.0},
        "relu": {"activation": "relu"},
        "use_cudnn": {"use_cudnn": False},
        "mixed_float16": {"dtype": "mixed_float16"},
        "gru-reset-before": {"reset_after": False},
        "gru-layer-norm": {"layer_norm": True},
        "gru-hard-sigmoid": {"recurrent_activation": "hard_sigmoid"},
        "gru-use_cudnn": {"use_cudnn": False},
    }.get(case, {})
    layer = layer_class(UNITS, **arguments)
    sequences = types.SimpleNamespace(shape=(BATCH, TIME, FEATURES))
    on(monkeypatch, "torch")
    for kernel in (klv.LSTM, klv.GRU):
        assert fast.fused_supported(kernel(UNITS), sequences, None, training=True)
    mask = np.ones((BATCH, TIME), bool) if case == "mask" else None
    assert not fast.fused_supported(layer, sequences, mask, training=True)


tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the TensorFlow backend's"
)


@pytest.fixture
def opted_in(monkeypatch):
    """TensorFlow's fused kernel on (``fast.BLOCK_LSTM``: off by default)."""
    monkeypatch.setattr(fast, "BLOCK_LSTM", True)


#: The configurations TensorFlow's ``BlockLSTMV2`` runs (in inference): our LSTM and the
#: peephole LSTM with any subset of peepholes, without options.
BLOCK = {
    "lstm": (klv.LSTM, {}),
    "lstm-no-bias": (klv.LSTM, {"use_bias": False}),
    "lstm-dropout": (klv.LSTM, {"dropout": 0.3, "recurrent_dropout": 0.3}),  # off in inference
    "peephole": (klv.PeepholeLSTM, {}),
    "peephole-fo": (klv.PeepholeLSTM, {"peepholes": ("forget", "output")}),
    "peephole-i": (klv.PeepholeLSTM, {"peepholes": ("input",)}),
}


@tensorflow_only
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
@pytest.mark.parametrize("config", BLOCK)
def test_tensorflow_kernel_equals_keras_rnn(config, go_backwards, monkeypatch, opted_in):
    """Outputs, final states and the gradients (``BlockLSTMGradV2``) of the inputs, initial
    states and every weight, against ``keras.layers.RNN(cell)``, in inference. The layer is
    traced before any tape records (as by ``predict``, or for a SavedModel) and differentiated
    through that graph afterwards; a tape recording at trace time keeps the cell's loop."""
    layer_class, arguments = BLOCK[config]
    block = count_calls(monkeypatch, fast, "_block_lstm_layer")

    def traced(layer, x, states):
        result = TracedLayer(layer, x, states)
        assert len(block) == 1, "the layer ran BlockLSTMV2"
        return result

    got, expected = with_reference(layer_class, arguments, go_backwards, False, wrap=traced)
    assert len(block) == 1, "the reference did not"
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)


class TracedLayer:
    """``layer``'s inference call as one ``tf.function``, traced now, with no tape recording."""

    def __init__(self, layer, x, states):
        import tensorflow as tf

        self.trainable_weights = layer.trainable_weights
        self.function = tf.function(
            lambda x, *states: layer(x, initial_state=list(states), training=False)
        )
        self.function(*(tf.constant(a) for a in (x, *states)))

    def __call__(self, x, initial_state, mask=None, training=False):
        assert mask is None and not training
        return self.function(x, *initial_state)


@tensorflow_only
def test_tensorflow_kernel_not_under_a_tape(monkeypatch, opted_in):
    """A tape recording while the layer runs keeps the cell's loop (its gradient is faster),
    so second-order gradients work as before."""
    import tensorflow as tf

    block = count_calls(monkeypatch, fast, "_block_lstm_layer")
    layer = klv.PeepholeLSTM(UNITS)
    x = tf.constant(np.random.default_rng(6).normal(size=(BATCH, TIME, FEATURES)), "float32")
    layer(x)
    assert len(block) == 1
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = tf.reduce_sum(layer(x) ** 2)
        g = tf.reduce_sum(inner.gradient(y, x) ** 2)
    assert np.all(np.isfinite(outer.gradient(g, x)))
    assert len(block) == 1


@tensorflow_only
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_tensorflow_kernel_in_models(jit_compile, monkeypatch, opted_in):
    """A compiled model's ``predict`` takes the kernel in a graph and steps the cell under XLA
    (which has no kernel for the op); both equal the layer's own training-mode loop, and the
    model's Bidirectional wrapper runs it both ways."""
    block = count_calls(monkeypatch, fast, "block_lstm")
    x = np.random.default_rng(4).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    inputs = keras.Input((None, FEATURES))
    outputs = keras.layers.Bidirectional(klv.PeepholeLSTM(UNITS, return_sequences=True))(inputs)
    model = keras.Model(inputs, klv.LSTM(UNITS)(outputs))
    randomize(model)
    model.compile(jit_compile=jit_compile)
    got = model.predict_on_batch(x)
    assert len(block) == (0 if jit_compile else 3)
    expected = model(x, training=True)  # no dropout: the same equations, the cell's loop
    assert len(block) == (0 if jit_compile else 3)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(expected), **TOLERANCE)


@tensorflow_only
@pytest.mark.parametrize("return_sequences", [False, True])
def test_tensorflow_kernel_free_batch(return_sequences, monkeypatch, opted_in):
    """With the batch and time known only at run time (a graph with free axes, as in a
    SavedModel), the graph holds the kernel and the cell's loop under ``tf.cond``; batches on
    both sides of ``BLOCK_MAX_BATCH`` equal ``keras.layers.RNN(cell)``."""
    import tensorflow as tf

    block = count_calls(monkeypatch, fast, "_block_lstm_layer")
    options = {"return_sequences": return_sequences, "return_state": True}
    shape = (None, None, FEATURES)
    layer, reference = with_keras_rnn(klv.PeepholeLSTM, shape, units=UNITS, **options)
    spec = tf.TensorSpec(shape, "float32")
    function = tf.function(lambda x: layer(x), input_signature=[spec])
    operations = {op.type for op in function.get_concrete_function().graph.get_operations()}
    assert {"If", "StatelessIf"} & operations, "the choice is made at run time"
    assert len(block) == 1
    generator = np.random.default_rng(5)
    for batch in (fast.BLOCK_MAX_BATCH, fast.BLOCK_MAX_BATCH + 1):
        x = generator.normal(size=(batch, TIME, FEATURES)).astype("float32")
        for a, b in zip(function(x), reference(x), strict=True):
            np.testing.assert_allclose(a, keras.ops.convert_to_numpy(b), **TOLERANCE)


@tensorflow_only
def test_tensorflow_kernel_fits_at_run_time():
    """``block_fits`` on run-time int64 tensors (a free axis) says what it says on Python
    integers, at the limits and where ``batch * time * units`` overflows int32."""
    import tensorflow as tf

    steps = fast.BLOCK_MAX_BYTES // (7 * 4 * UNITS)  # at batch 1
    for batch, time in [(1, steps), (1, steps + 1), (fast.BLOCK_MAX_BATCH + 1, 1), (16, 2**28)]:
        expected = fast.block_fits(batch, time, UNITS)
        got = fast.block_fits(*tf.constant([batch, time], tf.int64), UNITS)
        assert bool(got) == expected, (batch, time)
    assert fast.block_fits(1, steps, UNITS) and not fast.block_fits(1, steps + 1, UNITS)


@pytest.mark.parametrize(
    "case",
    [
        "training",
        "batch",
        "memory",
        "mask",
        "cifg",
        "greff",
        "layer_norm",
        "proj_units",
        "cell_clip",
        "zoneout",
        "relu",
        "hard_sigmoid",
        "float64",
        "mixed_float16",
        "unroll",
        "use_cudnn",
        "disabled",
        "default",
        "torch",
    ],
)
def test_tensorflow_kernel_cases(case, monkeypatch, opted_in):
    """What ``BlockLSTMV2`` does not compute, and training (where its gradient is slower than
    the cell's loop), are left to the cell; so is every other backend."""
    layer_class = {"cifg": klv.CIFGLSTM}.get(case, klv.PeepholeLSTM)
    if case == "greff":
        layer_class = functools.partial(klv.GreffLSTM, variant="NP")  # = LSTM, but a subclass
    elif case == "use_cudnn":
        layer_class = klv.LSTM
    arguments = {
        "layer_norm": {"layer_norm": True},
        "proj_units": {"proj_units": 3},
        "cell_clip": {"cell_clip": 1.0},  # the op clips too, but its gradient there is unproven
        "zoneout": {"zoneout": 0.1},
        "relu": {"activation": "relu"},
        "hard_sigmoid": {"recurrent_activation": "hard_sigmoid"},
        "float64": {"dtype": "float64"},
        "mixed_float16": {"dtype": "mixed_float16"},
        "unroll": {"unroll": True},
        "use_cudnn": {"use_cudnn": False},
    }.get(case, {})
    layer = layer_class(UNITS, **arguments)
    sequences = types.SimpleNamespace(shape=(BATCH, TIME, FEATURES))
    monkeypatch.setattr(fast, "_tensorflow_needs_loop", lambda: False)
    on(monkeypatch, "tensorflow")
    for kernel in (klv.LSTM, klv.PeepholeLSTM):
        assert fast.block_supported(kernel(UNITS), sequences, None, training=False)
    for batch in (None, fast.BLOCK_MAX_BATCH):  # None: block_lstm chooses at run time
        assert fast.block_supported(klv.LSTM(UNITS), _batch(batch), None, training=False)
    on(monkeypatch, "torch" if case == "torch" else "tensorflow")
    if case == "disabled":
        monkeypatch.setattr(fast, "ENABLED", False)
    elif case == "default":
        monkeypatch.setattr(fast, "BLOCK_LSTM", False)
    mask = np.ones((BATCH, TIME), bool) if case == "mask" else None
    if case == "batch":
        sequences = _batch(fast.BLOCK_MAX_BATCH + 1)
    elif case == "memory":  # one step more than BLOCK_MAX_BYTES holds
        steps = fast.BLOCK_MAX_BYTES // (7 * 4 * fast.BLOCK_MAX_BATCH * UNITS) + 1
        sequences = types.SimpleNamespace(shape=(fast.BLOCK_MAX_BATCH, steps, FEATURES))
        assert fast.block_supported(klv.LSTM(UNITS), _batch(None, steps - 1), None, False)
    training = case == "training"
    assert not fast.block_supported(layer, sequences, mask, training=training)


def _batch(size, time=TIME):
    return types.SimpleNamespace(shape=(size, time, FEATURES))


@tensorflow_only
def test_tensorflow_default_converts_to_tflite():
    """By default the layers never emit the op, so TensorFlow's own TFLite converter takes a
    model of them, as it takes the cell's loop (with the kernel opted in it fails)."""
    import tensorflow as tf

    model = keras.Sequential([keras.Input((TIME, FEATURES), batch_size=1), klv.PeepholeLSTM(UNITS)])
    assert tf.lite.TFLiteConverter.from_keras_model(model).convert()

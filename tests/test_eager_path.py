"""The ``torch-eager`` kernel (keras_lstm_variants/kernels/torch_eager.py) equals the per-step
loop; so do ``torch-fused`` (PyTorch's LSTM and GRU) and ``tf-block`` (TensorFlow's
``BlockLSTMV2``).

The torch backend takes the eager loop; its code is Keras ops, so on every backend it is
forced here and compared with ``keras.layers.RNN(cell)`` on the same weights: outputs, final
states and the gradients of the inputs, the (non-zero) initial states and every weight, in
training and in inference, forwards and with ``go_backwards``, float32 at 1e-5 relative. Then
the cases it must leave to Keras's loop (and the reasons it gives), and (on torch) that the
layers really take it. Then, on torch, PyTorch's kernels against the same reference and what
they leave to the cell; last, on TensorFlow, the opt-in ``BlockLSTMV2``.
"""

import functools
import types

import keras
import numpy as np
import pytest
from helpers import (
    assert_all_close,
    count_calls,
    float32_tolerance,
    float64_tolerance,
    keras_rnn_results,
    kernels_decide_as,
    randomize,
    refusal_options,
    refusal_reasons,
    with_keras_rnn,
)

import keras_lstm_variants as klv
from keras_lstm_variants import kernels
from keras_lstm_variants.kernels import tf_block, torch_eager, torch_fused

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
    """How often the layers took ``torch_eager.eager_rnn``."""
    return count_calls(monkeypatch, torch_eager, "eager_rnn")


@pytest.fixture
def forced(monkeypatch):
    """The eager loop on any backend (``loop="torch-eager"`` for every layer, the kernels
    deciding as on torch)."""
    kernels_decide_as(monkeypatch, "torch")
    with kernels.forced("torch-eager"):
        yield


def call(sequences, mask=None, training=True, layer=None):
    """The :class:`~keras_lstm_variants.kernels.Call` of ``layer`` on inputs shaped like
    ``sequences`` (a stand-in with a ``shape``)."""
    unroll = False if layer is None else layer.unroll
    return kernels.Call(sequences, [], mask=mask, training=training, unroll=unroll)


#: The layer class of a refusal case that names one (:func:`refused`).
CASE_LAYERS = {
    "slstm": klv.SLSTM,
    "peephole": klv.PeepholeLSTM,
    "cifg": klv.CIFGLSTM,
    "greff": functools.partial(klv.GreffLSTM, variant="NP"),  # = LSTM, but a subclass
    "use_cudnn": klv.LSTM,
    "float64": functools.partial(klv.PeepholeLSTM, dtype="float64"),
}


def refused(kernel, case, default=klv.PeepholeLSTM, training=True):
    """``kernel.why_not`` for refusal ``case``: its layer (``CASE_LAYERS``, a GRU for a case
    named ``gru-...``, else ``default``, with the case's options) on ``(BATCH, TIME,
    FEATURES)`` inputs, masked where the case is "mask"."""
    layer_class = klv.GRU if case.startswith("gru-") else CASE_LAYERS.get(case, default)
    layer = layer_class(UNITS, **refusal_options(case))
    sequences = types.SimpleNamespace(shape=(BATCH, TIME, FEATURES))
    mask = np.ones((BATCH, TIME), bool) if case == "mask" else None
    return kernel.why_not(layer, call(sequences, mask, training, layer))


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
@pytest.mark.parametrize("config", CONFIGS)
def test_equals_keras_rnn(config, go_backwards, training, forced, calls):
    layer_class, arguments = CONFIGS[config]
    got, expected = with_reference(layer_class, arguments, go_backwards, training)
    assert len(calls) == 1, "the layer took the eager loop (the reference did not)"
    assert_all_close(got, expected, TOLERANCE)


def with_reference(layer_class, arguments, go_backwards, training, dtype="float32", wrap=None):
    """``keras_rnn_results`` of ``layer_class(UNITS, **arguments)`` and of
    ``keras.layers.RNN`` over its cell, on ``(BATCH, TIME, FEATURES)`` inputs."""
    return keras_rnn_results(
        layer_class,
        (BATCH, TIME, FEATURES),
        training=training,
        wrap=wrap,
        units=UNITS,
        go_backwards=go_backwards,
        dtype=dtype,
        **arguments,
    )


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
    with kernels.forced("keras"):
        expected = results()
    assert len(calls) == 2
    assert_all_close(got, expected, TOLERANCE)


#: (case, a few words of the reason the eager loop gives)
EAGER_CASES = {
    "jax": "backend is jax",
    **refusal_reasons("mask", "zoneout", "unroll"),
    "dropout": "dropout in training",
    "recurrent_dropout": "dropout in training",
    "slstm": "SLSTMCell does not declare 'separable-input'",
}


@pytest.mark.parametrize("case", EAGER_CASES)
def test_keras_loop_cases(case, monkeypatch):
    kernels_decide_as(monkeypatch, "jax" if case == "jax" else "torch")
    reason = refused(torch_eager, case)
    assert reason is not None and EAGER_CASES[case] in reason
    if case in ("dropout", "recurrent_dropout"):  # dropout is off in inference
        assert refused(torch_eager, case, training=False) is None


torch_only = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's")


@torch_only
def test_torch_layers_take_it(calls, monkeypatch):
    fused = count_calls(monkeypatch, torch_fused, "torch_rnn")
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
    fused = count_calls(monkeypatch, torch_fused, "torch_rnn")
    got, expected = with_reference(layer_class, arguments, go_backwards, training, dtype)
    assert len(fused) == 1, "the layer ran PyTorch's kernel (the reference did not)"
    tolerance = TOLERANCE if dtype == "float32" else float64_tolerance(1e-10, 1e-12)
    assert_all_close(got, expected, tolerance)


#: (case, a few words of the reason PyTorch's kernels give)
FUSED_CASES = {
    "peephole": "PeepholeLSTMCell declares neither",
    "cifg": "CIFGLSTMCell declares neither",
    "greff": "GreffLSTMCell declares neither",
    **refusal_reasons(
        "layer_norm", "proj_units", "cell_clip", "relu", "use_cudnn", "mixed_float16", "mask"
    ),
    **refusal_reasons("reset_before", "layer_norm", "hard_sigmoid", "use_cudnn", prefix="gru-"),
}


@pytest.mark.parametrize("case", FUSED_CASES)
def test_torch_kernel_cases(case, monkeypatch):
    """What PyTorch's kernels do not compute is left to the cell."""
    sequences = types.SimpleNamespace(shape=(BATCH, TIME, FEATURES))
    kernels_decide_as(monkeypatch, "torch")
    for kernel in (klv.LSTM, klv.GRU):
        assert torch_fused.why_not(kernel(UNITS), call(sequences)) is None
    reason = refused(torch_fused, case, default=klv.LSTM)
    assert reason is not None and FUSED_CASES[case] in reason


tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the TensorFlow backend's"
)


#: The configurations TensorFlow's ``BlockLSTMV2`` runs (in inference): our LSTM and the
#: peephole LSTM with any subset of peepholes, without options; asked for by name
#: (``loop="tf-block"``: opt-in).
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
def test_tensorflow_kernel_equals_keras_rnn(config, go_backwards, monkeypatch):
    """Outputs, final states and the gradients (``BlockLSTMGradV2``) of the inputs, initial
    states and every weight, against ``keras.layers.RNN(cell)``, in inference. The layer is
    traced before any tape records (as by ``predict``, or for a SavedModel) and differentiated
    through that graph afterwards; a tape recording at trace time is refused (test below)."""
    layer_class, arguments = BLOCK[config]
    block = count_calls(monkeypatch, tf_block, "_block_lstm_layer")

    def traced(layer, x, states):
        result = TracedLayer(layer, x, states)
        assert len(block) == 1, "the layer ran BlockLSTMV2"
        return result

    arguments = {**arguments, "loop": "tf-block"}
    got, expected = with_reference(layer_class, arguments, go_backwards, False, wrap=traced)
    assert len(block) == 1, "the reference did not"
    assert_all_close(got, expected, TOLERANCE)


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
def test_tensorflow_kernel_not_under_a_tape(monkeypatch):
    """A tape recording while the layer runs: ``loop="tf-block"`` refuses, naming it (the
    cell's loop has the faster gradient, and a second-order one); ``loop="auto"`` never takes
    the kernel, so second-order gradients work as before."""
    import tensorflow as tf

    block = count_calls(monkeypatch, tf_block, "_block_lstm_layer")
    layer = klv.PeepholeLSTM(UNITS, loop="tf-block")
    x = tf.constant(np.random.default_rng(6).normal(size=(BATCH, TIME, FEATURES)), "float32")
    layer(x)
    assert len(block) == 1
    with tf.GradientTape() as tape, pytest.raises(ValueError, match="gradient tape is recording"):
        tape.watch(x)
        layer(x)
    layer.loop = "auto"
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = tf.reduce_sum(layer(x) ** 2)
        g = tf.reduce_sum(inner.gradient(y, x) ** 2)
    assert np.all(np.isfinite(outer.gradient(g, x)))
    assert len(block) == 1


@tensorflow_only
def test_tensorflow_kernel_in_models(monkeypatch):
    """A compiled model's ``predict`` takes the kernel in a graph, both ways of its
    Bidirectional wrapper, and equals Keras's loop; under XLA (which has no kernel for the
    op) and in training the layer refuses, naming why."""
    block = count_calls(monkeypatch, tf_block, "block_lstm")
    x = np.random.default_rng(4).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    inputs = keras.Input((None, FEATURES))
    layer = klv.PeepholeLSTM(UNITS, return_sequences=True, loop="tf-block")
    outputs = keras.layers.Bidirectional(layer)(inputs)
    model = keras.Model(inputs, klv.LSTM(UNITS, loop="tf-block")(outputs))
    randomize(model)
    model.compile(jit_compile=False)
    got = model.predict_on_batch(x)
    assert len(block) == 3
    with kernels.forced("keras"):
        expected = model(x)
    assert len(block) == 3
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(expected), **TOLERANCE)
    with pytest.raises(ValueError, match="training"):
        model(x, training=True)
    model.compile(jit_compile=True)
    with pytest.raises(ValueError, match="XLA"):
        model.predict_on_batch(x)


@tensorflow_only
@pytest.mark.parametrize("return_sequences", [False, True])
def test_tensorflow_kernel_free_batch(return_sequences, monkeypatch):
    """With the batch and time known only at run time (a graph with free axes, as in a
    SavedModel), the graph holds the kernel and the cell's loop under ``tf.cond``; batches on
    both sides of ``BLOCK_MAX_BATCH`` equal ``keras.layers.RNN(cell)``; with a known batch
    above it, the kernel runs Keras's loop."""
    import tensorflow as tf

    block = count_calls(monkeypatch, tf_block, "_block_lstm_layer")
    options = {"return_sequences": return_sequences, "return_state": True, "loop": "tf-block"}
    shape = (None, None, FEATURES)
    layer, reference = with_keras_rnn(klv.PeepholeLSTM, shape, units=UNITS, **options)
    spec = tf.TensorSpec(shape, "float32")
    function = tf.function(lambda x: layer(x), input_signature=[spec])
    operations = {op.type for op in function.get_concrete_function().graph.get_operations()}
    assert {"If", "StatelessIf"} & operations, "the choice is made at run time"
    assert len(block) == 1
    generator = np.random.default_rng(5)
    for batch in (tf_block.BLOCK_MAX_BATCH, tf_block.BLOCK_MAX_BATCH + 1):
        x = generator.normal(size=(batch, TIME, FEATURES)).astype("float32")
        for a, b in zip(function(x), reference(x), strict=True):
            np.testing.assert_allclose(a, keras.ops.convert_to_numpy(b), **TOLERANCE)
    for a, b in zip(layer(x), reference(x), strict=True):  # known batch, above the limit
        np.testing.assert_allclose(a, keras.ops.convert_to_numpy(b), **TOLERANCE)
    assert len(block) == 1


@tensorflow_only
def test_tensorflow_kernel_fits_at_run_time():
    """``block_fits`` on run-time int64 tensors (a free axis) says what it says on Python
    integers, at the limits and where ``batch * time * units`` overflows int32."""
    import tensorflow as tf

    steps = tf_block.BLOCK_MAX_BYTES // (7 * 4 * UNITS)  # at batch 1
    limit = tf_block.BLOCK_MAX_BATCH
    for batch, time in [(1, steps), (1, steps + 1), (limit + 1, 1), (16, 2**28)]:
        expected = tf_block.block_fits(batch, time, UNITS)
        got = tf_block.block_fits(*tf.constant([batch, time], tf.int64), UNITS)
        assert bool(got) == expected, (batch, time)
    assert tf_block.block_fits(1, steps, UNITS) and not tf_block.block_fits(1, steps + 1, UNITS)


#: (case, a few words of the reason ``BlockLSTMV2`` gives)
BLOCK_CASES = {
    "training": "training",
    "cifg": "CIFGLSTMCell does not declare 'tf-block-lstm'",
    "greff": "GreffLSTMCell does not declare 'tf-block-lstm'",
    # cell_clip: the op clips too, but its gradient there is unproven
    **refusal_reasons("mask", "layer_norm", "proj_units", "cell_clip", "zoneout", "relu"),
    **refusal_reasons("hard_sigmoid", "mixed_float16", "unroll", "use_cudnn"),
    "float64": "dtype is float64",
    "torch": "backend is torch",
}


@pytest.mark.parametrize("case", BLOCK_CASES)
def test_tensorflow_kernel_cases(case, monkeypatch):
    """What ``BlockLSTMV2`` does not compute, and training (where its gradient is slower than
    the cell's loop), are left to the cell; so is every other backend. ``auto`` never takes
    it (opt-in)."""
    sequences = types.SimpleNamespace(shape=(BATCH, TIME, FEATURES))
    monkeypatch.setattr(tf_block, "_tensorflow_needs_loop", lambda: None)
    kernels_decide_as(monkeypatch, "tensorflow")
    for kernel in (klv.LSTM, klv.PeepholeLSTM):
        lstm = kernel(UNITS)
        assert tf_block.why_not(lstm, call(sequences, training=False)) is None
        assert kernels.auto(lstm, call(sequences, training=False)) == "keras"
    kernels_decide_as(monkeypatch, "torch" if case == "torch" else "tensorflow")
    reason = refused(tf_block, case, training=case == "training")
    assert reason is not None and BLOCK_CASES[case] in reason


@tensorflow_only
def test_tensorflow_default_converts_to_tflite(tmp_path):
    """By default the layers never emit the op, so TensorFlow's own TFLite converter takes a
    model of them, as it takes the cell's loop; ``export_tflite`` converts a model whose
    layers ask for the op too (it traces with ``kernels.forced("auto")``)."""
    import tensorflow as tf

    model = keras.Sequential([keras.Input((TIME, FEATURES), batch_size=1), klv.PeepholeLSTM(UNITS)])
    assert tf.lite.TFLiteConverter.from_keras_model(model).convert()
    layer = klv.PeepholeLSTM(UNITS, loop="tf-block")
    model = keras.Sequential([keras.Input((TIME, FEATURES), batch_size=1), layer])
    assert klv.export_tflite(model, str(tmp_path / "model.tflite"))

"""The production options of issue 9 -- layer norm, projection, cell/projection clipping and
zoneout -- against the papers' equations (tests/reference.py's ``lstm_step`` / ``gru_step``
with their option arguments).

Random weights (std 0.5, every gain and bias too), non-zero initial states, 6 steps, batch 3,
padding on either side; outputs, final states, gates and float64 gradients. Each option is
checked to change the oracle's result on these data, so ignoring it would fail.
"""

import functools
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import reference
import tensorflow as tf
from helpers import (
    BATCH,
    FEATURES,
    TIME,
    UNITS,
    central_differences,
    padding_mask,
    rng,
    setter,
    to_numpy,
    xla,
)

import keras_lstm_variants as klv
from keras_lstm_variants.cells import base as cells_base

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
PROJ = 2

#: The LSTM-type cells: (cell class, layer class, arguments, enabled peepholes in weight order).
KINDS = {
    "lstm": (klv.LSTMCell, klv.LSTM, {}, ()),
    "peephole": (klv.PeepholeLSTMCell, klv.PeepholeLSTM, {}, ("input", "forget", "output")),
    "cifg": (
        klv.CIFGLSTMCell,
        klv.CIFGLSTM,
        {"peepholes": ("output", "forget")},
        ("forget", "output"),
    ),
}

OPTIONS = {
    "layer_norm": {"layer_norm": True},
    "layer_norm-eps": {"layer_norm": True, "norm_epsilon": 0.05},
    "proj": {"proj_units": PROJ},
    "proj-clip": {"proj_units": PROJ, "proj_clip": 0.1},
    "cell_clip": {"cell_clip": 0.4},
    "zoneout": {"zoneout": (0.3, 0.2)},
    "zoneout-float": {"zoneout": 0.25},
    "ln-proj": {"layer_norm": True, "proj_units": PROJ},
    "all": {
        "layer_norm": True,
        "proj_units": PROJ,
        "proj_clip": 0.4,
        "cell_clip": 0.6,
        "zoneout": (0.25, 0.1),
    },
}


def make_data(options, seed=1, batch=BATCH, time=TIME, dtype="float32"):
    """Inputs and non-zero (h, c); h is ``proj_units`` wide when there is a projection."""
    generator = rng(seed)
    x = generator.normal(size=(batch, time, FEATURES)).astype(dtype)
    h = generator.normal(0.0, 0.5, (batch, options.get("proj_units") or UNITS)).astype(dtype)
    c = generator.normal(0.0, 0.5, (batch, UNITS)).astype(dtype)
    return x, [h, c]


def randomize(layer, seed=0):
    """Random normal (std 0.5) values for every weight of ``layer``, gains included."""
    generator = rng(seed)
    layer.set_weights([generator.normal(0.0, 0.5, w.shape) for w in layer.get_weights()])
    return [w.astype(np.float64) for w in layer.get_weights()]


def oracle(kind, options, weights, **overrides):
    """reference.lstm_step bound to ``weights`` read in the documented order: kernel,
    recurrent_kernel, bias, peepholes (input, forget, output), the six LN vectors (kernel,
    recurrent, cell; gamma then beta), projection_kernel. Zoneout at inference (rates)."""
    kernel, recurrent_kernel, bias, *rest = weights
    peephole_gates = KINDS[kind][3]
    peepholes = dict(zip(peephole_gates, rest[: len(peephole_gates)], strict=True))
    rest = rest[len(peephole_gates) :]
    norms = None
    if options.get("layer_norm"):
        norms = {"kernel": rest[0:2], "recurrent": rest[2:4], "cell": rest[4:6]}
        rest = rest[6:]
    projection = rest.pop(0) if options.get("proj_units") else None
    assert not rest, "unexpected extra weights"
    zoneout = options.get("zoneout", 0.0)
    zoneout = zoneout if isinstance(zoneout, tuple) else (zoneout, zoneout)
    arguments = {
        "kernel": kernel,
        "recurrent_kernel": recurrent_kernel,
        "bias": bias,
        "peepholes": peepholes,
        "coupled": kind == "cifg",
        "norms": norms,
        "epsilon": options.get("norm_epsilon", 1e-3),
        "projection": projection,
        "cell_clip": options.get("cell_clip"),
        "proj_clip": options.get("proj_clip"),
        "zoneout_d": zoneout,
    }
    return functools.partial(reference.lstm_step, **{**arguments, **overrides})


def sequence_layer(kind, options, path="layer", **kwargs):
    cell_class, layer_class, arguments, _ = KINDS[kind]
    kwargs.update(return_sequences=True, return_state=True)
    if path == "rnn":
        layer = keras.layers.RNN(cell_class(UNITS, **arguments, **options), **kwargs)
    else:
        layer = layer_class(UNITS, **arguments, **options, **kwargs)
    layer.build((BATCH, TIME, FEATURES))
    return layer


# ------------------------------------------------------------------ numerics vs the oracle


@pytest.mark.parametrize(
    "kind, option, path",
    [(kind, option, "layer") for kind in KINDS for option in OPTIONS]
    + [(kind, "all", "rnn") for kind in KINDS],
)
def test_sequence_matches_reference(kind, option, path):
    """Outputs and final states, padded on the right (row 0) and on the left (row 1)."""
    options = OPTIONS[option]
    layer = sequence_layer(kind, options, path)
    weights = randomize(layer)
    x, states = make_data(options)
    mask = padding_mask()
    outputs, *final = to_numpy(layer(x, initial_state=states, mask=mask))
    expected, expected_final = reference.run(oracle(kind, options, weights), x, states, mask=mask)
    assert outputs.shape == (BATCH, TIME, options.get("proj_units") or UNITS)
    np.testing.assert_allclose(outputs, expected, **TOLERANCE)
    for state, expected_state in zip(final, expected_final, strict=True):
        np.testing.assert_allclose(state, expected_state, **TOLERANCE)


@pytest.mark.parametrize(
    "option, off",
    [
        ("layer_norm", {"norms": None}),
        ("layer_norm-eps", {"epsilon": 1e-3}),
        ("proj-clip", {"proj_clip": None}),
        ("cell_clip", {"cell_clip": None}),
        ("zoneout", {"zoneout_d": (0.0, 0.0)}),
        ("zoneout", {"zoneout_d": (0.3, 0.0)}),
        ("zoneout", {"zoneout_d": (0.0, 0.2)}),
    ],
)
def test_each_option_changes_the_result(option, off):
    """On the data of the tests above each option (and each half of zoneout) is active: a
    cell that ignored it would fail test_sequence_matches_reference."""
    options = OPTIONS[option]
    weights = randomize(sequence_layer("peephole", options))
    x, states = make_data(options)
    with_option = reference.run(oracle("peephole", options, weights), x, states)[0]
    without = reference.run(oracle("peephole", options, weights, **off), x, states)[0]
    assert np.abs(with_option - without).max() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_gates_match_reference(kind):
    options = OPTIONS["all"]
    cell = KINDS[kind][0](UNITS, **KINDS[kind][2], **options)
    cell.build((BATCH, FEATURES))
    weights = randomize(cell)
    x, states = make_data(options)
    gates, new_states = to_numpy(cell.gates(x[:, 0], states))
    expected_gates, expected_states = oracle(kind, options, weights)(x[:, 0], states)
    assert tuple(gates) == cell.gate_names
    for name, gate in gates.items():
        np.testing.assert_allclose(gate, expected_gates[name], **TOLERANCE, err_msg=name)
    for state, expected_state in zip(new_states, expected_states, strict=True):
        np.testing.assert_allclose(state, expected_state, **TOLERANCE)


GRU_OPTIONS = {
    "layer_norm": {"layer_norm": True},
    "zoneout": {"zoneout": 0.3},
    "both": {"layer_norm": True, "zoneout": 0.3, "norm_epsilon": 0.01},
    "zoneout-reset-before": {"zoneout": 0.3, "reset_after": False},
}


def gru_oracle(options, weights):
    kernel, recurrent_kernel, bias, *norms = weights
    return functools.partial(
        reference.gru_step,
        kernel=kernel,
        recurrent_kernel=recurrent_kernel,
        bias=bias,
        reset_after=options.get("reset_after", True),
        norms={"kernel": norms[0:2], "recurrent": norms[2:4]} if norms else None,
        epsilon=options.get("norm_epsilon", 1e-3),
        zoneout_d=options.get("zoneout", 0.0),
    )


@pytest.mark.parametrize("option", GRU_OPTIONS)
def test_gru_matches_reference(option):
    options = GRU_OPTIONS[option]
    layer = klv.GRU(UNITS, return_sequences=True, return_state=True, **options)
    layer.build((BATCH, TIME, FEATURES))
    weights = randomize(layer)
    assert len(weights) == (7 if options.get("layer_norm") else 3)
    x, (h, _) = make_data({})
    mask = padding_mask()
    outputs, final = to_numpy(layer(x, initial_state=[h], mask=mask))
    expected, (expected_final,) = reference.run(gru_oracle(options, weights), x, [h], mask=mask)
    np.testing.assert_allclose(outputs, expected, **TOLERANCE)
    np.testing.assert_allclose(final, expected_final, **TOLERANCE)
    plain = reference.run(
        gru_oracle({"reset_after": options.get("reset_after", True)}, weights[:3]), x, [h]
    )
    assert np.abs(plain[0] - reference.run(gru_oracle(options, weights), x, [h])[0]).max() > 1e-3


# ------------------------------------------------------------------------- gradients


def gradient_case(cell, x, states):
    """Autodiff gradients of a random projection of outputs and final states (inputs, initial
    states, every weight) and the same by float64 central finite differences."""
    layer = keras.layers.RNN(cell, return_sequences=True, return_state=True, dtype="float64")
    layer.build(x.shape)
    randomize(layer)
    generator = rng(7)
    probes = None

    @tf.function
    def loss(x, states):
        results = layer(x, initial_state=states)
        return sum(tf.reduce_sum(r * p) for r, p in zip(results, probes, strict=True))

    probes = [generator.normal(size=r.shape) for r in layer(x, initial_state=states)]
    inputs = [tf.constant(x)] + [tf.constant(s) for s in states]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        value = loss(inputs[0], inputs[1:])
    grads = tape.gradient(value, inputs + list(layer.trainable_weights))
    current = [x, *states]

    def evaluate():
        return float(loss(tf.constant(current[0]), [tf.constant(s) for s in current[1:]]))

    expected = [
        central_differences(evaluate, array, setter(current, k))
        for k, array in enumerate(list(current))
    ] + [central_differences(evaluate, v.numpy(), v.assign) for v in layer.trainable_weights]
    assert len(grads) == len(expected)
    for grad, fd in zip(grads, expected, strict=True):
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["peephole"])
@pytest.mark.float64_finite_differences
def test_gradients_match_finite_differences(kind):
    """Every option at once (zoneout at inference, where the step is deterministic)."""
    options = OPTIONS["all"]
    cell = KINDS[kind][0](UNITS, **KINDS[kind][2], **options, dtype="float64")
    x, states = make_data(options, batch=3, time=5, dtype="float64")
    gradient_case(cell, x[..., :2], states)


@pytest.mark.float64_finite_differences
def test_gru_gradients_match_finite_differences():
    cell = klv.GRUCell(UNITS, layer_norm=True, zoneout=0.3, dtype="float64")
    x, (h, _) = make_data({}, batch=3, time=5, dtype="float64")
    gradient_case(cell, x[..., :2], [h])


@pytest.mark.parametrize("variant, kind", [("V", "peephole"), ("NP", "lstm")])
def test_greff_takes_the_options_through_the_hooks(variant, kind):
    """GreffLSTM's V and NP with every option equal the peephole LSTM and the LSTM with them
    (weights copied): the Greff cell gets the options from the shared hooks."""
    options = OPTIONS["all"]
    ours = sequence_layer(kind, options)
    greff = klv.GreffLSTM(
        UNITS, variant=variant, return_sequences=True, return_state=True, **options
    )
    greff.build((BATCH, TIME, FEATURES))
    greff.set_weights(randomize(ours))
    x, states = make_data(options)
    mask = padding_mask()
    for a, b in zip(
        to_numpy(greff(x, initial_state=states, mask=mask)),
        to_numpy(ours(x, initial_state=states, mask=mask)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_mixed_precision_with_every_option():
    """Under mixed_float16 (LN statistics in float32) the options run and stay close to float32."""
    options = OPTIONS["all"]
    x, states = make_data(options)
    full = sequence_layer("peephole", options)
    weights = randomize(full)
    expected = to_numpy(full(x, initial_state=states)[0])
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half = sequence_layer("peephole", options)
        half.set_weights(weights)
        outputs = half(x, initial_state=states)[0]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(outputs.dtype) == "float16"
    np.testing.assert_allclose(to_numpy(outputs).astype("float32"), expected, atol=2e-2)


# --------------------------------------------------------------------------- zoneout


def record_zoneout(monkeypatch):
    """Record, for every zoneout call, the mask d (1 where the previous value was kept)."""
    records = []
    real = cells_base.zone_out

    def recording(new, previous, rate, training, cell, keep=None):
        result = real(new, previous, rate, training, cell, keep)
        if rate > 0:
            result_, previous_, new_ = to_numpy((result, previous, new))
            kept = result_ == previous_
            assert np.all(kept | (result_ == new_)), "d must be 0 or 1"
            records.append(kept.astype("float64"))
        return result

    monkeypatch.setattr(cells_base, "zone_out", recording)
    return records


@pytest.mark.parametrize(
    "kind, path, unroll",
    [
        ("lstm", "layer", False),
        ("peephole", "layer", False),
        ("cifg", "layer", False),
        ("lstm", "layer", True),
        ("lstm", "rnn", False),
    ],
)
def test_zoneout_training_matches_reference_with_its_masks(kind, path, unroll, monkeypatch):
    """In training, c = d_c c_prev + (1 - d_c) c_new and h likewise, with fresh masks at each
    step (h computed from the new c), padding on either side. The layers draw the masks before
    the loop (also unrolled); a cell in keras.layers.RNN draws them at each step."""
    options = {"zoneout": (0.5, 0.4), "proj_units": PROJ, "seed": 3}
    layer = sequence_layer(kind, options, path, unroll=unroll)
    weights = randomize(layer)
    x, states = make_data(options)
    mask = padding_mask()
    records = record_zoneout(monkeypatch)
    if keras.backend.backend() == "jax":
        import jax

        if path == "rnn":  # one traced step for the whole scan: refused, naming JAX
            with pytest.raises(ValueError, match="JAX"):
                layer(x, initial_state=states, mask=mask, training=True)
            return
        with jax.disable_jit():  # the scan runs step by step, so the masks can be recorded
            outputs, *final = to_numpy(layer(x, initial_state=states, mask=mask, training=True))
    else:
        outputs, *final = to_numpy(layer(x, initial_state=states, mask=mask, training=True))
    # h then c at every step (TensorFlow's loop first calls the step once to learn its shapes)
    assert len(records) in (2 * TIME, 2 * TIME + 2)
    d_h, d_c = records[-2 * TIME :: 2], records[-2 * TIME + 1 :: 2]
    for masks in (d_h, d_c):
        assert any(not np.array_equal(m, masks[0]) for m in masks[1:]), "one mask per step"
        assert 0 < np.mean(masks) < 1
    pairs = iter(zip(d_c, d_h, strict=True))
    step = oracle(kind, options, weights)

    def zoned_step(x_t, states):
        return step(x_t, states, zoneout_d=next(pairs))

    expected, expected_final = reference.run(zoned_step, x, states, mask=mask, unroll=unroll)
    np.testing.assert_allclose(outputs, expected, **TOLERANCE)
    for state, expected_state in zip(final, expected_final, strict=True):
        np.testing.assert_allclose(state, expected_state, **TOLERANCE)


def zoneout_h_masks(layer, run):
    """Each step's h-zoneout mask, read back from the outputs of ``run(x, h, c)`` (a training
    call of ``layer``, z_c = 0 so that c follows the oracle); h must be h_prev or the new h."""
    options = {"zoneout": layer.cell.zoneout}
    weights = randomize(layer)
    x, states = make_data(options, batch=8)
    outputs = to_numpy(run(x, *states)[0]).astype(np.float64)
    step = oracle("lstm", options, weights, zoneout_d=(0.0, 0.0))
    h, c = (s.astype(np.float64) for s in states)
    masks = []
    for t in range(TIME):
        _, (h_new, c) = step(x[:, t], (h, c))
        kept = np.isclose(outputs[:, t], h, rtol=0, atol=1e-5)
        fresh = np.isclose(outputs[:, t], h_new, rtol=0, atol=1e-5)
        assert np.all(kept | fresh), f"step {t}: h is neither h_prev nor the new h"
        masks.append(kept & ~fresh)
        h = outputs[:, t]
    return masks


@pytest.mark.parametrize("path", ["layer", "rnn"])
def test_zoneout_masks_change_every_step_under_jit(path):
    """Compiled with XLA, each step has its own mask (drawn before the loop by the layer, in
    the while loop by a cell in keras.layers.RNN)."""
    layer = sequence_layer("lstm", {"zoneout": (0.0, 0.5), "seed": 11}, path)
    run = xla(lambda x, h, c: layer(x, initial_state=[h, c], training=True))
    if keras.backend.backend() == "jax" and path == "rnn":  # refused there, naming JAX
        with pytest.raises(ValueError, match="JAX"):
            zoneout_h_masks(layer, run)
        return
    masks = zoneout_h_masks(layer, run)
    assert len({m.tobytes() for m in masks}) == TIME, "a new mask at every step"
    assert 0.3 < np.mean(masks) < 0.7


JAX_SCRIPT = """
import jax, keras, numpy as np, pytest, test_options as t
layer = t.sequence_layer("lstm", {"zoneout": (0.0, 0.5), "seed": 11})
run = jax.jit(lambda x, h, c: layer(x, initial_state=[h, c], training=True))
masks = t.zoneout_h_masks(layer, run)
assert len({m.tobytes() for m in masks}) == t.TIME, "a new mask at every step"
rnn = t.sequence_layer("lstm", {"zoneout": 0.5}, "rnn")
x, states = t.make_data({})
with pytest.raises(ValueError, match="JAX"):
    rnn(x, initial_state=states, training=True)
print("ok")
"""


def test_zoneout_masks_change_every_step_on_jax():
    """On JAX the time loop is a scan traced once: the layer's masks, drawn before the loop,
    still differ per step; a cell in keras.layers.RNN refuses zoneout training there."""
    pytest.importorskip("jax")
    tests = os.path.dirname(os.path.abspath(__file__))
    environment = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": tests}
    done = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_zoneout_is_seeded_and_fresh_per_call():
    options = {"zoneout": (0.3, 0.3)}
    x, states = make_data({})
    first, second, other = (sequence_layer("lstm", options, seed=seed) for seed in (5, 5, 6))
    weights = randomize(first)
    second.set_weights(weights)
    other.set_weights(weights)
    a = to_numpy(first(x, initial_state=states, training=True)[0])
    np.testing.assert_array_equal(a, to_numpy(second(x, initial_state=states, training=True)[0]))
    assert np.abs(a - to_numpy(other(x, initial_state=states, training=True)[0])).max() > 1e-4
    again = to_numpy(first(x, initial_state=states, training=True)[0])
    assert np.abs(a - again).max() > 1e-4, "new masks at every call"


# --------------------------------------------------------------------- options off


OFF = {
    "layer_norm": False,
    "proj_units": None,
    "proj_clip": None,
    "cell_clip": None,
    "zoneout": 0.0,
}
OPTION_OPS = {"Mean", "Rsqrt", "ClipByValue", "Minimum", "Maximum", "SelectV2", "Select"}


def step_op_types(cell, training=True):
    """The op types of one training step of ``cell`` traced as a TF graph."""
    cell.build((BATCH, FEATURES))
    x, states = make_data({"proj_units": getattr(cell, "proj_units", None)})
    function = tf.function(lambda x, s: cell.gates(x, s, training=training))
    graph = function.get_concrete_function(x[:, 0], states[: len(cell.state_size)]).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.tensorflow_only("reads the op types of the step's TensorFlow graph")
@pytest.mark.parametrize("kind", KINDS)
def test_options_off_are_todays_cell(kind):
    """Explicitly off = not given: same weights, same outputs, and no op of any option in the
    step's graph (while each option on adds its ops, so the check can fail)."""
    cell_class, _, arguments, _ = KINDS[kind]
    default = sequence_layer(kind, {})
    explicit = sequence_layer(kind, OFF)
    assert [w.shape for w in default.weights] == [w.shape for w in explicit.weights]
    explicit.set_weights(randomize(default))
    x, states = make_data({})
    for ours, theirs in zip(
        default(x, initial_state=states), explicit(x, initial_state=states), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    plain = step_op_types(cell_class(UNITS, **arguments))
    assert not plain & OPTION_OPS, plain & OPTION_OPS
    assert not any("Random" in op for op in plain)
    for option in ("layer_norm", "cell_clip", "zoneout", "proj-clip"):
        ops = step_op_types(cell_class(UNITS, **arguments, **OPTIONS[option]))
        assert ops - plain, option


def test_options_off_lstm_equals_keras():
    ours = klv.LSTM(UNITS, return_sequences=True, return_state=True, **OFF)
    keras_lstm = keras.layers.LSTM(UNITS, return_sequences=True, return_state=True, use_cudnn=False)
    ours.build((BATCH, TIME, FEATURES))
    keras_lstm.build((BATCH, TIME, FEATURES))
    assert [w.shape for w in ours.weights] == [w.shape for w in keras_lstm.weights]
    keras_lstm.set_weights(randomize(ours))
    x, states = make_data({})
    for a, b in zip(
        to_numpy(ours(x, initial_state=states)),
        to_numpy(keras_lstm(x, initial_state=states)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_weight_order_and_shapes():
    layer = sequence_layer("peephole", OPTIONS["all"])
    names = [w.path.rsplit("/", 1)[-1] for w in layer.weights]
    assert names == [
        "kernel",
        "recurrent_kernel",
        "bias",
        "input_gate_peephole_weights",
        "forget_gate_peephole_weights",
        "output_gate_peephole_weights",
        "kernel_norm_gamma",
        "kernel_norm_beta",
        "recurrent_norm_gamma",
        "recurrent_norm_beta",
        "cell_norm_gamma",
        "cell_norm_beta",
        "projection_kernel",
    ]
    shapes = dict(zip(names, (tuple(w.shape) for w in layer.weights), strict=True))
    assert shapes["recurrent_kernel"] == (PROJ, 4 * UNITS)
    assert shapes["projection_kernel"] == (UNITS, PROJ)
    assert shapes["kernel_norm_gamma"] == (4 * UNITS,) and shapes["cell_norm_beta"] == (UNITS,)
    assert layer.cell.state_size == [PROJ, UNITS] and layer.cell.output_size == PROJ
    assert (layer.proj_units, layer.cell_clip, layer.zoneout) == (PROJ, 0.6, (0.25, 0.1))


# -------------------------------------------------------- every allowed combination


#: Every option appears, in one stacked model (the LSTM-type cells share the option code).
COMBINATIONS = [
    ("lstm", OPTIONS["all"]),
    ("cifg", {"proj_units": PROJ, "cell_clip": 3.0, "zoneout": 0.1}),
    ("peephole", {"layer_norm": True, "norm_epsilon": 0.01, "zoneout": (0.1, 0.0)}),
    ("gru", {"layer_norm": True, "zoneout": 0.2}),
]


def stacked_model(combinations):
    recurrent = [
        (klv.GRU if kind == "gru" else KINDS[kind][1])(
            UNITS,
            return_sequences=True,
            seed=k,
            name=kind,
            **({} if kind == "gru" else KINDS[kind][2]),
            **options,
        )
        for k, (kind, options) in enumerate(combinations)
    ]
    model = keras.Sequential([keras.Input((None, FEATURES)), *recurrent, keras.layers.Dense(1)])
    return model, recurrent


def test_options_train_under_xla():
    """Training (zoneout's masks drawn, gradients through LN, projection and clipping) compiles
    with XLA and lowers the loss."""
    model, _ = stacked_model(COMBINATIONS[:1])  # every LSTM option at once
    x, _ = make_data({})
    model.compile(keras.optimizers.Adam(0.02), "mse", jit_compile=True)
    history = model.fit(x, np.ones((BATCH, TIME, 1)), epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_combinations_save_and_trace(tmp_path):
    """A model stacking every combination round-trips ``.keras`` and traces each layer's
    gates."""
    model, recurrent = stacked_model(COMBINATIONS)
    x, _ = make_data({})
    expected = np.asarray(model.predict_on_batch(x))

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict_on_batch(x), expected, rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(loaded.layers, model.layers, strict=True):
        assert ours.get_config() == theirs.get_config()

    traces = klv.trace_gates(model, x)
    assert len(traces) == len(COMBINATIONS)
    for layer, trace in zip(recurrent, traces.values(), strict=True):
        assert trace["h"].shape == (BATCH, TIME, layer.cell.output_size), layer.name
        assert set(layer.cell.gate_names) <= set(trace)


@pytest.mark.tensorflow_only("exports a SavedModel")
def test_combinations_stream_from_a_saved_model(tmp_path):
    """The same model streams from its SavedModel, step by step, as it predicts."""
    model, _ = stacked_model(COMBINATIONS)
    x, _ = make_data({})
    expected = np.asarray(model.predict_on_batch(x))
    klv.export_saved_model(model, tmp_path / "saved", streaming=True)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    states = dict(served.signatures["initial_state"](batch_size=BATCH))
    for t in range(TIME):
        states = dict(served.signatures["step"](x_t=x[:, t], **states))
        np.testing.assert_allclose(states.pop("output"), expected[:, t], atol=1e-5)


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "argument, value",
    [
        ("proj_units", 0),
        ("proj_units", -2),
        ("proj_units", 2.5),
        ("proj_units", "4"),
        ("proj_units", True),
        ("cell_clip", 0),
        ("cell_clip", -1.0),
        ("cell_clip", "3"),
        ("cell_clip", True),
        ("proj_clip", 0.0),
        ("zoneout", -0.1),
        ("zoneout", 1.0),
        ("zoneout", (0.1,)),
        ("zoneout", (0.1, 0.2, 0.3)),
        ("zoneout", (0.1, 1.5)),
        ("zoneout", "0.1"),
        ("zoneout", True),
        ("zoneout", None),
        ("layer_norm", 1),
        ("layer_norm", "yes"),
        ("layer_norm", None),
        ("norm_epsilon", 0.0),
        ("norm_epsilon", -1e-3),
    ],
)
@pytest.mark.parametrize("klass", [klv.LSTMCell, klv.PeepholeLSTM, klv.CIFGLSTMCell, klv.LSTM])
def test_bad_option_values_name_the_argument(klass, argument, value):
    extra = {"proj_units": 2} if argument == "proj_clip" else {"layer_norm": True}
    if argument in ("layer_norm", "proj_units"):
        extra = {}
    with pytest.raises(ValueError, match=f"`{argument}`"):
        klass(3, **{argument: value}, **extra)


@pytest.mark.parametrize(
    "klass, arguments, named",
    [
        (klv.LSTMCell, {"proj_clip": 1.0}, "proj_clip"),
        (klv.LSTM, {"norm_epsilon": 1e-5}, "norm_epsilon"),
        (klv.GRUCell, {"proj_units": 2}, "proj_units"),
        (klv.GRU, {"proj_units": 2}, "proj_units"),
        (klv.GRUCell, {"cell_clip": 1.0}, "cell_clip"),
        (klv.GRU, {"proj_clip": 1.0}, "proj_clip"),
        (klv.GRU, {"layer_norm": True, "reset_after": False}, "layer_norm"),
        (klv.GRUCell, {"zoneout": (0.1, 0.2)}, "zoneout"),
        (klv.GRU, {"layer_norm": "true"}, "layer_norm"),
    ],
)
def test_disallowed_combinations_raise_at_construction(klass, arguments, named):
    with pytest.raises(ValueError, match=f"`{named}`"):
        klass(3, **arguments)


@pytest.mark.parametrize("option", ["layer_norm", "proj"])
def test_weights_of_another_layout_are_refused(option, tmp_path):
    """Weights saved with an option do not load into a layer without it (issue 12 item 6)."""

    def model(**options):
        return keras.Sequential([keras.Input((TIME, FEATURES)), klv.LSTM(UNITS, **options)])

    model(**OPTIONS[option]).save_weights(tmp_path / "lstm.weights.h5")
    plain = model()
    name = "layer_norm" if option == "layer_norm" else "proj_units"
    with pytest.raises(ValueError, match=name):
        plain.load_weights(tmp_path / "lstm.weights.h5")


# ------------------------------------------------------------------- PyTorch port


@pytest.mark.parametrize("proj_size", [0, PROJ])
def test_weights_from_torch_lstm_equal_torch(proj_size):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(FEATURES, UNITS, num_layers=2, proj_size=proj_size, batch_first=True)
    generator = rng(2)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.from_numpy(generator.normal(0.0, 0.5, parameter.shape)))
    width = proj_size or UNITS
    x = generator.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    h0 = generator.normal(0.0, 0.5, (2, BATCH, width)).astype("float32")
    c0 = generator.normal(0.0, 0.5, (2, BATCH, UNITS)).astype("float32")
    with torch.no_grad():
        expected, (h_n, c_n) = module(
            torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0))
        )
    state_dict = module.state_dict()  # torch tensors: the function converts them
    numpy_dict = {key: value.numpy() for key, value in state_dict.items()}
    h = x
    for k in range(2):
        layer = klv.LSTM(
            UNITS, proj_units=proj_size or None, return_sequences=True, return_state=True
        )
        layer.build((BATCH, TIME, h.shape[-1]))
        layer.set_weights(
            klv.weights_from_torch_lstm(state_dict if k else numpy_dict, layer_index=k)
        )
        h, h_k, c_k = to_numpy(layer(h, initial_state=[h0[k], c0[k]]))
        np.testing.assert_allclose(h_k, h_n[k].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c_k, c_n[k].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_weights_from_torch_lstm_bad_input():
    weights = {"weight_ih_l0": np.zeros((8, 3)), "weight_hh_l0": np.zeros((8, 2))}
    assert [w.shape for w in klv.weights_from_torch_lstm(weights)] == [(3, 8), (2, 8)]
    with pytest.raises(ValueError, match="`layer_index`"):
        klv.weights_from_torch_lstm(weights, layer_index=1)
    with pytest.raises(ValueError, match="`layer_index`"):
        klv.weights_from_torch_lstm(weights, layer_index="0")
    with pytest.raises(ValueError, match="`state_dict`"):
        klv.weights_from_torch_lstm([np.zeros((8, 3))])
    with pytest.raises(ValueError, match="`state_dict`"):
        klv.weights_from_torch_lstm({**weights, "weight_hr_l0": np.zeros((3, 2))})

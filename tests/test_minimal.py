"""minGRU and minLSTM (issue 11): the scan path equals stepping the cell, and both equal the paper.

Two paths, one definition: the sequence layers (``klv.MinGRU``, ``klv.MinLSTM``) project every
step at once and scan the recurrence ``h_t = a_t h_{t-1} + b_t``; ``keras.layers.RNN(cell)``
steps the cell's ``transition``. Random weights N(0, 0.5^2), non-zero (and negative) initial
states, masks padded on either side, batch 3; outputs, final states and gradients. Oracles:
tests/reference.py's transcriptions of the paper's sequential step and of its parallel
log-space code.
"""

import functools
import os
import subprocess
import sys

import helpers
import keras
import numpy as np
import pytest
import reference
from helpers import (
    central_differences,
    float64_tolerance,
    gradients,
    padding_mask,
    rng,
    setter,
    to_numpy,
)

import keras_lstm_variants as klv

BATCH, TIME, FEATURES, UNITS = 3, 7, 4, 3
CELLS = {"mingru": klv.MinGRUCell, "minlstm": klv.MinLSTMCell}
LAYERS = {"mingru": klv.MinGRU, "minlstm": klv.MinLSTM}
STEPS = {"mingru": reference.min_gru_step, "minlstm": reference.min_lstm_step}
PARALLEL = {"mingru": reference.min_gru_parallel, "minlstm": reference.min_lstm_parallel}
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
MODES = [
    pytest.param(name, log_space, id=f"{name}-{'log' if log_space else 'linear'}")
    for name in CELLS
    for log_space in (True, False)
]


def inputs(time=TIME, seed=1, dtype="float32", positive_state=False):
    generator = rng(seed)
    x = generator.normal(size=(BATCH, time, FEATURES)).astype(dtype)
    h_0 = generator.normal(0.0, 0.5, (BATCH, UNITS))
    return x, (np.abs(h_0) if positive_state else h_0).astype(dtype)


def random_weights(layer, seed=0):
    generator = rng(seed)
    layer.set_weights([generator.normal(0.0, 0.5, w.shape) for w in layer.get_weights()])
    return [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]


def pair(name, log_space, dtype="float32", **options):
    """The scan layer and ``keras.layers.RNN`` over the same cell type, with equal weights."""
    options = {"return_sequences": True, "return_state": True, **options}
    scan = LAYERS[name](UNITS, log_space=log_space, dtype=dtype, **options)
    cell = CELLS[name](UNITS, log_space=log_space, dtype=dtype)
    step = keras.layers.RNN(cell, dtype=dtype, **options)
    shape = (BATCH, TIME, FEATURES)
    scan.build(shape)
    step.build(shape)
    step.set_weights(scan.get_weights())
    weights = random_weights(scan)
    step.set_weights(scan.get_weights())
    return scan, step, weights


def run_with_gradients(layer, x, h_0, mask=None, training=False, seed=7):
    """Results of ``layer`` and the gradients of a random linear probe of all of them with
    respect to ``x``, ``h_0`` and every trainable weight (tests/helpers.py)."""
    results, grads = helpers.run_with_gradients(layer, x, [h_0], mask, training, seed)
    return [np.asarray(r) for r in results], [np.asarray(g) for g in grads]


def assert_paths_agree(scan, step, x, h_0, tolerance=TOLERANCE, scaled=False, **kwargs):
    """Results and gradients equal within ``tolerance``; with ``scaled``, a gradient's
    ``atol`` is relative to its largest entry (a weight's gradient sums T * B terms, whose
    float32 rounding grows with T whatever the order of summation)."""
    results, grads = run_with_gradients(scan, x, h_0, **kwargs)
    expected, expected_grads = run_with_gradients(step, x, h_0, **kwargs)
    assert len(results) == len(expected) and len(grads) == len(expected_grads)
    for k, (a, b) in enumerate(zip(results + grads, expected + expected_grads, strict=True)):
        atol = tolerance["atol"] * (np.abs(b).max() if scaled and k >= len(results) else 1.0)
        np.testing.assert_allclose(
            a, b, rtol=tolerance["rtol"], atol=atol, err_msg=f"result/gradient {k}"
        )
    return results


def oracle_step(name, weights, log_space):
    kernel, bias = weights
    return functools.partial(STEPS[name], kernel=kernel, bias=bias, log_space=log_space)


# ---------------------------------------------------------------------- the equations
@pytest.mark.parametrize("name, log_space", MODES)
def test_cell_step_matches_the_paper(name, log_space):
    """One step of the cell (gates and state) against the NumPy transcription."""
    cell = CELLS[name](UNITS, log_space=log_space)
    cell.build((BATCH, FEATURES))
    weights = random_weights(cell)
    x, h_0 = inputs()
    gates, (h,) = to_numpy(cell.gates(x[:, 0], [h_0]))
    expected_gates, (expected_h,) = oracle_step(name, weights, log_space)(x[:, 0], (h_0,))
    assert tuple(gates) == cell.gate_names == tuple(expected_gates)
    for gate in gates:
        np.testing.assert_allclose(gates[gate], expected_gates[gate], **TOLERANCE, err_msg=gate)
    np.testing.assert_allclose(h, expected_h, **TOLERANCE)
    if name == "minlstm":  # the normalized gates
        np.testing.assert_allclose(gates["forget"] + gates["input"], 1.0, rtol=1e-6)


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("name, log_space", MODES)
def test_both_paths_match_the_paper(name, log_space, masked, go_backwards):
    """Scan layer and RNN(cell) against the oracle run step by step (Keras's mask rule)."""
    scan, step, weights = pair(name, log_space, go_backwards=go_backwards)
    x, h_0 = inputs()
    mask = padding_mask(BATCH, TIME) if masked else None
    expected, (expected_h,) = reference.run(
        oracle_step(name, weights, log_space), x, (h_0,), go_backwards=go_backwards, mask=mask
    )
    for layer in (scan, step):
        outputs, h = to_numpy(layer(x, initial_state=[h_0], mask=mask))
        np.testing.assert_allclose(outputs, expected, **TOLERANCE)
        np.testing.assert_allclose(h, expected_h, **TOLERANCE)


@pytest.mark.parametrize("name", CELLS)
def test_log_space_layer_equals_the_papers_parallel_code(name):
    """float64: the layer equals the paper's parallel log-space code (cumsum, logcumsumexp,
    log h_0 of a positive h_0), transcribed in reference.parallel_scan_log."""
    layer = LAYERS[name](UNITS, return_sequences=True, dtype="float64")
    layer.build((BATCH, TIME, FEATURES))
    kernel, bias = random_weights(layer)
    x, h_0 = inputs(dtype="float64", positive_state=True)
    expected = PARALLEL[name](x, h_0, kernel, bias)
    outputs = to_numpy(layer(x, initial_state=[h_0]))
    np.testing.assert_allclose(outputs, expected, **float64_tolerance(1e-12, 1e-12))


def test_the_oracle_detects_swapped_blocks():
    """The comparison with the oracle can fail: minLSTM with its i and f blocks swapped."""
    layer = LAYERS["minlstm"](UNITS, return_sequences=True)
    layer.build((BATCH, TIME, FEATURES))
    kernel, bias = random_weights(layer)
    x, h_0 = inputs()
    swap = [0, 1, 2, 3, 4, 5, 6, 7, 8]
    swap[:6] = [3, 4, 5, 0, 1, 2]
    step = functools.partial(reference.min_lstm_step, kernel=kernel[:, swap], bias=bias[swap])
    swapped = reference.run(step, x, (h_0,))[0]
    expected = reference.run(oracle_step("minlstm", [kernel, bias], True), x, (h_0,))[0]
    outputs = to_numpy(layer(x, initial_state=[h_0]))
    np.testing.assert_allclose(outputs, expected, **TOLERANCE)
    assert np.abs(outputs - swapped).max() > 1e-2


# ------------------------------------------------------------------ scan == step
SCENARIOS = {
    "sequences": {},
    "masked": {"mask": True},
    "backwards-masked": {"go_backwards": True, "mask": True},
    "last-output-masked": {"return_sequences": False, "mask": True},
    "zero-output-for-mask": {"zero_output_for_mask": True, "mask": True},
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name, log_space", MODES)
def test_scan_equals_stepping_the_cell(name, log_space, scenario):
    """float32, 1e-5: outputs, final state, and gradients (x, h_0, kernel, bias)."""
    options = dict(SCENARIOS[scenario])
    mask = padding_mask(BATCH, TIME) if options.pop("mask", False) else None
    scan, step, _ = pair(name, log_space, **options)
    x, h_0 = inputs()
    assert_paths_agree(scan, step, x, h_0, mask=mask)


@pytest.mark.parametrize("name", CELLS)
def test_scan_equals_stepping_at_2000_steps(name):
    """A long sequence (2000 steps, padded 300 steps on the left and right): outputs and final
    state within 1e-5; gradients within 1e-5 of their largest entry."""
    time = 2000
    scan, step, _ = pair(name, True)
    x, h_0 = inputs(time=time)
    mask = np.ones((BATCH, time), dtype=bool)
    mask[0, -300:] = False
    mask[1, :300] = False
    results = assert_paths_agree(scan, step, x, h_0, mask=mask, scaled=True)
    assert np.abs(results[0][:, -1] - results[0][:, 0]).max() > 1e-2  # not a constant


@pytest.mark.float64_finite_differences
@pytest.mark.parametrize("name, log_space", MODES)
def test_float64_gradients_equal_finite_differences(name, log_space):
    """The scan's custom (adjoint) gradient equals central differences, masked, float64;
    and the scan equals stepping the cell to 1e-12."""
    import tensorflow as tf

    time = 6
    mask = padding_mask(BATCH, time)
    scan, step, _ = pair(name, log_space, dtype="float64")
    x, h_0 = inputs(time=time, dtype="float64")
    assert_paths_agree(scan, step, x, h_0, mask=mask, tolerance={"rtol": 1e-12, "atol": 1e-12})
    generator = np.random.default_rng(5)
    probes = [generator.normal(size=(BATCH, time, UNITS)), generator.normal(size=(BATCH, UNITS))]

    @tf.function
    def loss(x, h_0):
        outputs, h = scan(x, initial_state=[h_0], mask=mask)
        return tf.reduce_sum(outputs * probes[0]) + tf.reduce_sum(h * probes[1])

    values = [x, h_0] + [v.numpy() for v in scan.trainable_weights]
    with tf.GradientTape() as tape:
        tensors = [tf.constant(x), tf.constant(h_0)]
        tape.watch(tensors)
        value = loss(*tensors)
    grads = tape.gradient(value, tensors + list(scan.trainable_weights))

    def evaluate(k, array):
        current = [x, h_0]
        if k < 2:
            current[k] = array
        else:
            scan.trainable_weights[k - 2].assign(array)
        result = float(loss(tf.constant(current[0]), tf.constant(current[1])))
        if k >= 2:
            scan.trainable_weights[k - 2].assign(values[k])
        return result

    for k, (value_k, grad) in enumerate(zip(values, grads, strict=True)):
        current = [value_k]
        expected = central_differences(
            lambda k=k, current=current: evaluate(k, current[0]), value_k, setter(current, 0)
        )
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8, err_msg=f"input {k}")


@pytest.mark.parametrize("name", CELLS)
def test_zero_initial_state_has_finite_gradients(name):
    """Keras's default zero state (whose log the paper's code would take) is exact here."""
    scan, step, _ = pair(name, True)
    x, _ = inputs()
    for layer in (scan, step):
        layer.return_state = False
    results = []
    for layer in (scan, step):

        def loss(x, layer=layer):
            outputs = layer(x)
            return keras.ops.sum(outputs * outputs), outputs

        grads, outputs = gradients(layer, loss, [x], has_aux=True)
        assert all(np.isfinite(g).all() for g in grads)
        results.append([outputs, *grads])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)


@pytest.mark.parametrize("name", CELLS)
def test_input_dropout_one_mask_per_sequence(name):
    """training=True: the scan applies the cell's one input mask to every step (the oracle
    with that mask agrees); inference ignores it."""
    layer = LAYERS[name](UNITS, return_sequences=True, dropout=0.5, seed=3)
    layer.build((BATCH, TIME, FEATURES))
    weights = random_weights(layer)
    x, h_0 = inputs()
    records = []
    original = layer.cell.get_dropout_mask

    def recording(step_input):
        mask = original(step_input)
        records.append(to_numpy(mask))
        return mask

    layer.cell.get_dropout_mask = recording
    outputs = to_numpy(layer(x, initial_state=[h_0], training=True))
    assert records and all(np.array_equal(m, records[0]) for m in records)
    assert set(np.unique(records[0])) == {0.0, 2.0}
    expected = reference.run(oracle_step(name, weights, True), x, (h_0,), input_mask=records[0])[0]
    np.testing.assert_allclose(outputs, expected, **TOLERANCE)
    plain = reference.run(oracle_step(name, weights, True), x, (h_0,))[0]
    inference = to_numpy(layer(x, initial_state=[h_0], training=False))
    np.testing.assert_allclose(inference, plain, **TOLERANCE)


# ------------------------------------------------------------------ the contract
@pytest.mark.parametrize("name", CELLS)
def test_stateful_carries_the_state_like_the_cell(name):
    scan, step, _ = pair(name, True, stateful=True, return_state=False)
    x, _ = inputs()
    second, _ = inputs(seed=2)
    for batch in (x, second):
        np.testing.assert_allclose(to_numpy(scan(batch)), to_numpy(step(batch)), **TOLERANCE)
    np.testing.assert_allclose(scan.states[0], step.states[0], **TOLERANCE)
    scan.reset_state()
    step.reset_state()
    np.testing.assert_allclose(to_numpy(scan(x)), to_numpy(step(x)), **TOLERANCE)


@pytest.mark.parametrize("name", CELLS)
def test_wrappers_stacks_and_saving(name, tmp_path):
    """Bidirectional (a backward copy from the config), StackedRNNCells of both minimal
    cells, a .keras round trip and config round trip."""
    x, _ = inputs()
    inputs_ = keras.Input((TIME, FEATURES))
    layer = LAYERS[name](UNITS, return_sequences=True, log_space=False, name="minimal")
    y = keras.layers.Bidirectional(layer)(inputs_)
    cells = [klv.MinGRUCell(4), klv.MinLSTMCell(UNITS)]
    y = keras.layers.RNN(keras.layers.StackedRNNCells(cells), return_sequences=True)(y)
    model = keras.Model(inputs_, keras.layers.Dense(1)(y))
    random_weights(model)
    backward = model.layers[1].backward_layer
    assert type(backward) is LAYERS[name] and backward.go_backwards and not backward.log_space
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6, atol=1e-6)
    config = layer.get_config()
    assert config["log_space"] is False and "recurrent_dropout" not in config
    assert LAYERS[name].from_config(config).get_config() == config


@pytest.mark.parametrize("name", CELLS)
def test_trains_under_jit_compile(name):
    """The scan layer trains under XLA; the compiled step equals the eager layer."""
    x, _ = inputs()
    layer = LAYERS[name](UNITS, return_sequences=True)
    model = keras.Sequential([keras.Input((TIME, FEATURES)), layer, keras.layers.Dense(1)])
    random_weights(model)
    model.compile("adam", "mse", jit_compile=True)
    np.testing.assert_allclose(model.predict_on_batch(x), to_numpy(model(x)), **TOLERANCE)
    history = model.fit(x, np.ones((BATCH, TIME, 1)), epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.parametrize("name", CELLS)
def test_mixed_precision(name):
    """mixed_float16: float16 outputs; the scan runs in float32 and agrees with the cell."""
    x, h_0 = inputs()
    scan, step, _ = pair(name, True, dtype="mixed_float16")
    outputs, h = to_numpy(scan(x, initial_state=[h_0]))
    expected, expected_h = to_numpy(step(x, initial_state=[h_0]))
    assert keras.backend.standardize_dtype(outputs.dtype) == "float16"
    np.testing.assert_allclose(outputs, expected, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(h, expected_h, rtol=1e-2, atol=1e-2)


@pytest.mark.tensorflow_only("traces a tf.function at a free time axis, as a SavedModel is")
@pytest.mark.parametrize("name", CELLS)
def test_unknown_length_steps_the_cell(name):
    """With no static number of steps (a graph traced at a free time axis, as a SavedModel
    signature is) the layer steps the cell: same results."""
    import tensorflow as tf

    layer = LAYERS[name](UNITS, return_sequences=True, return_state=True)
    layer.build((BATCH, TIME, FEATURES))
    random_weights(layer)
    x, h_0 = inputs()
    spec = tf.TensorSpec((None, None, FEATURES), "float32")
    free = tf.function(lambda x: layer(x, initial_state=[tf.constant(h_0)]), input_signature=[spec])
    for a, b in zip(free(x), layer(x, initial_state=[h_0]), strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)


@pytest.mark.parametrize("name", CELLS)
def test_trace_gates_reports_the_cells_gates(name):
    """minGRU: ``update`` (z); minLSTM: the normalized ``forget`` and ``input`` (sum to 1)."""
    layer = LAYERS[name](UNITS, return_sequences=True, name="minimal")
    model = keras.Sequential([keras.Input((TIME, FEATURES)), layer])
    weights = random_weights(model)
    x, _ = inputs()
    mask = padding_mask(BATCH, TIME)
    trace = klv.trace_gates(model, x, mask=mask)["minimal"]
    names = ("update",) if name == "mingru" else ("forget", "input")
    assert tuple(key for key in trace if key not in ("c", "h")) == names
    expected_gates = []
    states = (np.zeros((BATCH, UNITS)),)
    for t in range(TIME):
        step_gates, new_states = oracle_step(name, weights, True)(x[:, t], states)
        keep = mask[:, t : t + 1]
        states = tuple(np.where(keep, n, s) for n, s in zip(new_states, states, strict=True))
        expected_gates.append(step_gates)
    for gate in names:
        expected = np.stack([g[gate] for g in expected_gates], axis=1)
        expected[~mask] = np.nan
        np.testing.assert_allclose(trace[gate], expected, **TOLERANCE, err_msg=gate)
    if name == "minlstm":
        np.testing.assert_allclose((trace["forget"] + trace["input"])[mask], 1.0, rtol=1e-6)


@pytest.mark.tensorflow_only("exports a SavedModel")
def test_streaming_export_steps_the_cell(tmp_path):
    """The streaming SavedModel's ``step`` reproduces the scan layer's outputs step by step."""
    import tensorflow as tf

    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            klv.MinGRU(UNITS, return_sequences=True, name="gru"),
            klv.MinLSTM(UNITS, return_sequences=True, log_space=False, name="lstm"),
        ]
    )
    random_weights(model)
    x, _ = inputs()
    expected = np.asarray(model(x))
    path = klv.export_saved_model(model, os.path.join(tmp_path, "m"), streaming=True)
    served = tf.saved_model.load(path)
    states = served.signatures["initial_state"](batch_size=tf.constant(BATCH))
    for t in range(TIME):
        result = served.signatures["step"](x_t=tf.constant(x[:, t]), **states)
        np.testing.assert_allclose(result.pop("output"), expected[:, t], **TOLERANCE)
        states = result
    full = served.signatures["serving_default"](inputs=tf.constant(x))["output"]
    np.testing.assert_allclose(full, expected, **TOLERANCE)


# ------------------------------------------------------------------- bad input
UNSUPPORTED = {
    "recurrent_dropout": 0.1,
    "recurrent_initializer": "orthogonal",
    "recurrent_regularizer": "l2",
    "recurrent_constraint": "non_neg",
    "activation": "relu",
    "recurrent_activation": "hard_sigmoid",
    "unit_forget_bias": True,
    "peepholes": ("forget",),
    "reset_after": False,
}


@pytest.mark.parametrize("argument", UNSUPPORTED)
@pytest.mark.parametrize("klass", [*CELLS.values(), *LAYERS.values()], ids=lambda k: k.__name__)
def test_unsupported_arguments_raise_naming_them(klass, argument):
    with pytest.raises(ValueError, match=f"does not take `{argument}`"):
        klass(UNITS, **{argument: UNSUPPORTED[argument]})


@pytest.mark.parametrize("klass", [*CELLS.values(), *LAYERS.values()], ids=lambda k: k.__name__)
def test_log_space_must_be_a_bool(klass):
    with pytest.raises(ValueError, match="`log_space`"):
        klass(UNITS, log_space="yes")


@pytest.mark.parametrize("klass", LAYERS.values(), ids=lambda k: k.__name__)
def test_unroll_is_refused(klass):
    with pytest.raises(ValueError, match="`unroll`"):
        klass(UNITS, unroll=True)


JAX_CHECK = """
import numpy as np, keras, jax
import keras_lstm_variants as klv
rng = np.random.default_rng(0)
x = rng.normal(size=(3, 12, 4)).astype("float32")
h_0 = rng.normal(0, 0.5, (3, 3)).astype("float32")
mask = np.ones((3, 12), bool)
mask[0, -3:] = False
mask[1, :3] = False
for cell, layer in [(klv.MinGRUCell, klv.MinGRU), (klv.MinLSTMCell, klv.MinLSTM)]:
    scan = layer(3, return_sequences=True, return_state=True)
    step = keras.layers.RNN(cell(3), return_sequences=True, return_state=True)
    scan.build(x.shape)
    step.build(x.shape)
    scan.set_weights([rng.normal(0, 0.5, w.shape) for w in scan.get_weights()])
    step.set_weights(scan.get_weights())
    def loss(x, h_0, layer):
        outputs, h = layer(x, initial_state=[h_0], mask=mask)
        return (outputs * outputs).sum() + (2 * h).sum(), (outputs, h)
    results = [jax.grad(loss, argnums=(0, 1), has_aux=True)(x, h_0, l) for l in (scan, step)]
    flat = [jax.tree_util.tree_leaves(r) for r in results]
    for a, b in zip(*flat):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
print("equal")
"""


def test_scan_equals_stepping_on_jax():
    """On JAX, whose time loop outputs the carried state (not zeros) at masked steps before the
    first unmasked one, the scan follows it too (outputs, final state, gradients)."""
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", JAX_CHECK], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0 and "equal" in done.stdout, done.stderr[-3000:]

"""xLSTM's sLSTM and mLSTM (issue 16): exact against the paper's equations (NumPy oracles in
tests/reference.py), the stabilizer invisible, the parallel mLSTM equal to stepping its cell,
finite over 10,000 steps of large inputs, equal to the official ``xlstm`` package (when torch and
xlstm are installed), and usable wherever the other variants go."""

import functools
import importlib.util

import keras
import numpy as np
import pytest
import reference
from helpers import (
    central_differences,
    float64_tolerance,
    run_with_gradients,
    setter,
    to_numpy,
    xla_training,
)

import keras_lstm_variants as klv

BATCH, TIME, FEATURES, UNITS = 3, 7, 4, 6

#: case: (cell class, constructor arguments). Three heads of two units, or two of three.
CASES = {
    "slstm": (klv.SLSTMCell, {}),
    "slstm-heads": (klv.SLSTMCell, {"num_heads": 3}),
    "slstm-exp": (klv.SLSTMCell, {"num_heads": 2, "forget_activation": "exp"}),
    "mlstm": (klv.MLSTMCell, {}),
    "mlstm-heads": (klv.MLSTMCell, {"num_heads": 3}),
    "mlstm-exp": (klv.MLSTMCell, {"num_heads": 2, "forget_activation": "exp"}),
}
MLSTM_CASES = [case for case in CASES if case.startswith("mlstm")]
LAYER = {klv.SLSTMCell: klv.SLSTM, klv.MLSTMCell: klv.MLSTM}
#: A state-mixing reference per cell: which oracle step computes one step.
STEP = {klv.SLSTMCell: reference.slstm_step, klv.MLSTMCell: reference.mlstm_step}


def make_cell(case, **kwargs):
    cell_class, arguments = CASES[case]
    return cell_class(UNITS, **arguments, **kwargs)


def make_layer(case, **kwargs):
    cell_class, arguments = CASES[case]
    return LAYER[cell_class](UNITS, **arguments, **kwargs)


def randomize(layer, seed=0, std=0.5):
    generator = np.random.default_rng(seed)
    layer.set_weights([generator.normal(0.0, std, w.shape) for w in layer.get_weights()])
    return [w.astype(np.float64) for w in layer.get_weights()]


def data(case, seed=1, batch=BATCH, time=TIME, features=FEATURES, dtype="float32", scale=1.0):
    """Inputs and a non-zero, reachable initial state: the normalizer n of an sLSTM is
    positive (a sum of positive gates), every other state entry is any real number."""
    generator = np.random.default_rng(seed)
    x = scale * generator.normal(size=(batch, time, features))
    cell = make_cell(case)
    states = [generator.normal(0.0, 0.5, (batch, size)) for size in cell.state_size]
    if isinstance(cell, klv.SLSTMCell):
        states[2] = np.abs(states[2]) + 0.5
    return x.astype(dtype), [s.astype(dtype) for s in states]


def padding_mask(batch=BATCH, time=TIME):
    """Rows padded on the right, on the left, and not at all."""
    mask = np.ones((batch, time), dtype=bool)
    mask[0, time - 2 :] = False
    mask[1, :3] = False
    return mask


def oracle(case, weights):
    """The NumPy step of ``case`` with its weights bound (sLSTM: kernel, recurrent kernel,
    bias; mLSTM: kernel, bias)."""
    cell_class, arguments = CASES[case]
    keys = ("kernel", "bias")
    if cell_class is klv.SLSTMCell:
        keys = ("kernel", "recurrent_kernel", "bias")
    return functools.partial(STEP[cell_class], **dict(zip(keys, weights, strict=True)), **arguments)


# ------------------------------------------------------------------ against the oracles
PATHS = {
    "rnn-of-cell": lambda case, **o: keras.layers.RNN(make_cell(case, dtype="float64"), **o),
    "layer": lambda case, **o: make_layer(case, **o),
}
SCENARIOS = {
    "plain": {},
    "masked": {"mask": True},
    "backwards-masked": {"mask": True, "go_backwards": True},
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES)
def test_sequence_matches_reference(case, path, scenario):
    """Outputs and every final state equal the paper's equations stepped in float64, from a
    non-zero state, with padding on either side and backwards (the mLSTM layer: parallel)."""
    options = dict(SCENARIOS[scenario])
    mask = padding_mask() if options.pop("mask", False) else None
    layer = PATHS[path](case, return_sequences=True, return_state=True, dtype="float64", **options)
    x, states = data(case, dtype="float64")
    layer.build(x.shape)
    step = oracle(case, randomize(layer))
    outputs, *final = to_numpy(layer(x, initial_state=states, mask=mask))
    expected, expected_final = reference.run(
        step, x, states, mask=mask, go_backwards=options.get("go_backwards", False)
    )
    np.testing.assert_allclose(outputs, expected, **float64_tolerance(1e-9, 1e-12))
    for ours, theirs in zip(final, expected_final, strict=True):
        np.testing.assert_allclose(ours, theirs, **float64_tolerance(1e-9, 1e-12))


@pytest.mark.parametrize("case", ["slstm-heads", "mlstm-heads"])
def test_block_order_is_checked(case):
    """Swapping two heads' recurrent blocks, or the i and f blocks, changes the result: the
    oracle comparison above cannot pass with a mis-sliced layout."""
    layer = make_layer(case, return_sequences=True, dtype="float64")
    x, states = data(case, dtype="float64")
    layer.build(x.shape)
    weights = randomize(layer)
    expected, _ = reference.run(oracle(case, weights), x, states)
    kernel = weights[0].copy()
    blocks = np.split(kernel[:, : 4 * UNITS], 4, axis=1)  # sLSTM: i, f, z, o; mLSTM: q, k, v, o~
    blocks[0], blocks[1] = blocks[1], blocks[0]
    kernel[:, : 4 * UNITS] = np.concatenate(blocks, axis=1)
    swapped, _ = reference.run(oracle(case, [kernel, *weights[1:]]), x, states)
    assert np.abs(swapped - expected).max() > 1e-3


@pytest.mark.parametrize("case", CASES)
def test_stabilizer_is_invisible(case):
    """The stabilized cell equals the paper's unstabilized equations (moderate inputs):
    ``h`` is the same and the stored memory is the true one times ``exp(-m)``."""
    layer = make_layer(case, return_sequences=True, return_state=True, dtype="float64")
    x, states = data(case, dtype="float64")
    layer.build(x.shape)
    weights = randomize(layer)
    outputs, *final = to_numpy(layer(x, initial_state=states))
    cell_class, arguments = CASES[case]
    d = UNITS // layer.num_heads
    scale = np.exp(states[3])  # true memory = stored memory * exp(m), per unit / per head
    if cell_class is klv.SLSTMCell:
        step = functools.partial(reference.slstm_step_unstabilized, **arguments)
        step = functools.partial(step, kernel=weights[0], recurrent_kernel=weights[1])
        true_states = (states[0], states[1] * scale, states[2] * scale)
        final_scale = np.exp(final[3])
    else:
        step = functools.partial(reference.mlstm_step_unstabilized, **arguments)
        step = functools.partial(step, kernel=weights[0])
        true_states = (
            states[0],
            states[1] * np.repeat(scale, d * d, -1),
            states[2] * np.repeat(scale, d, -1),
        )
        final_scale = np.exp(final[3])
    expected, expected_final = reference.run(step, x, true_states, bias=weights[-1])
    np.testing.assert_allclose(outputs, expected, **float64_tolerance(1e-8, 1e-10))
    repeat = (1, 1) if cell_class is klv.SLSTMCell else (d * d, d)
    for stored, true, r in zip(final[1:3], expected_final[1:], repeat, strict=True):
        scaled = stored * np.repeat(final_scale, r, -1)
        np.testing.assert_allclose(scaled, true, **float64_tolerance(1e-8))


@pytest.mark.parametrize("case", CASES)
def test_traced_gates_are_the_stabilized_gates(case):
    """trace_gates reports i' and f' (each <= 1, one of them 1 at every step of the sLSTM
    and every head of the mLSTM) and o, equal to the oracle's."""
    x, _ = data(case)
    layer = make_layer(case, return_sequences=True)
    model = keras.Sequential([keras.Input((TIME, FEATURES)), layer])
    step = oracle(case, randomize(layer))
    trace = klv.trace_gates(model, x)[layer.name]
    assert list(trace)[: len(layer.cell.gate_names)] == list(layer.cell.gate_names)
    state = tuple(s.astype(np.float64) for s in to_numpy(layer.get_initial_state(BATCH)))
    for t in range(TIME):
        gates, state = step(x[:, t].astype(np.float64), state)
        for name in layer.cell.gate_names:
            np.testing.assert_allclose(trace[name][:, t], gates[name], rtol=1e-4, atol=1e-5)
    i, f = trace["input"], trace["forget"]
    assert (i <= 1 + 1e-6).all() and (f <= 1 + 1e-6).all() and (i > 0).all()
    np.testing.assert_allclose(np.maximum(i, f), 1.0, rtol=1e-6)


# ------------------------------------------------------------ gradients, finite differences
@pytest.mark.float64_finite_differences
@pytest.mark.parametrize("case", ["slstm-heads", "slstm-exp", "mlstm-heads", "mlstm-exp"])
def test_gradients_match_finite_differences(case):
    """Autodiff gradients (inputs, initial states, every weight) of the layer (the mLSTM's
    parallel form) equal float64 central differences, through a padded mask."""
    import tensorflow as tf

    time, features = 5, 2
    layer = make_layer(case, return_sequences=True, return_state=True, dtype="float64")
    x, states = data(case, time=time, features=features, dtype="float64")
    mask = tf.constant(padding_mask(time=time))
    layer.build(x.shape)
    randomize(layer)
    generator = np.random.default_rng(7)
    probes = [generator.normal(size=(BATCH, time, UNITS))] + [
        generator.normal(size=s.shape) for s in states
    ]

    @tf.function
    def loss(x, states):
        results = layer(x, initial_state=states, mask=mask)
        return sum(tf.reduce_sum(r * p) for r, p in zip(results, probes, strict=True))

    inputs = [tf.constant(x)] + [tf.constant(s) for s in states]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        value = loss(inputs[0], inputs[1:])
    grads = tape.gradient(value, inputs + list(layer.trainable_weights))
    current = [x, *states]

    def evaluate():
        return float(loss(tf.constant(current[0]), [tf.constant(s) for s in current[1:]]))

    expected = [
        central_differences(evaluate, a, setter(current, k)) for k, a in enumerate(list(current))
    ]
    expected += [
        central_differences(evaluate, w.numpy(), w.assign) for w in layer.trainable_weights
    ]
    assert len(grads) == len(expected)
    for grad, fd in zip(grads, expected, strict=True):
        grad = np.zeros_like(fd) if grad is None else np.asarray(grad)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------- parallel == stepping
PARALLEL_SCENARIOS = {
    "sequences": {"return_sequences": True, "return_state": True},
    "last-output": {"return_state": True},
    "masked": {"return_sequences": True, "return_state": True, "mask": True},
    "masked-last": {"return_state": True, "mask": True},
    "masked-zero-output": {
        "return_sequences": True,
        "return_state": True,
        "mask": True,
        "zero_output_for_mask": True,
    },
    "backwards-masked": {
        "return_sequences": True,
        "return_state": True,
        "mask": True,
        "go_backwards": True,
    },
    "dropout-training": {"return_sequences": True, "dropout": 0.4, "seed": 3, "training": True},
}


@pytest.mark.parametrize("scenario", PARALLEL_SCENARIOS)
@pytest.mark.parametrize("case", MLSTM_CASES)
def test_parallel_equals_stepping_the_cell(case, scenario):
    """The MLSTM layer's parallel form equals stepping MLSTMCell: outputs, final states and
    gradients (inputs, initial states, weights) within 1e-5, from a non-zero state."""
    options = dict(PARALLEL_SCENARIOS[scenario])
    mask = padding_mask() if options.pop("mask", False) else None
    training = options.pop("training", False)
    x, states = data(case)
    parallel = make_layer(case, **options)
    stepped = make_layer(case, parallel=False, **options)
    parallel.build(x.shape)
    stepped.build(x.shape)
    stepped.set_weights(randomize(parallel))
    ours, our_grads = run_with_gradients(parallel, x, states, mask, training)
    theirs, their_grads = run_with_gradients(stepped, x, states, mask, training)
    assert len(ours) == len(theirs) and len(our_grads) == len(their_grads)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # A gradient sums many float32 products: its rounding scales with its largest entry (the
    # x-gradient of mlstm-exp, entries up to 35: both forms are 2e-5 to 7e-5 off the float64
    # value at one entry of 2.28, on TensorFlow and JAX alike; float64, they agree to 1e-13).
    for a, b in zip(our_grads, their_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(b).max()))


def test_parallel_fully_masked_row_keeps_the_state():
    """A row with no step at all keeps its initial state and outputs zeros (the rule of
    Keras's loop on TensorFlow and torch; on JAX the loop outputs the initial h)."""
    x, states = data("mlstm-heads")
    mask = padding_mask()
    mask[2] = False
    layer = make_layer("mlstm-heads", return_sequences=True, return_state=True)
    stepped = make_layer("mlstm-heads", parallel=False, return_sequences=True, return_state=True)
    layer.build(x.shape)
    stepped.build(x.shape)
    stepped.set_weights(randomize(layer))
    ours = to_numpy(layer(x, initial_state=states, mask=mask))
    theirs = to_numpy(stepped(x, initial_state=states, mask=mask))
    leading = (
        np.broadcast_to(states[0][2], ours[0][2].shape)
        if reference.LEADING_OUTPUT_IS_STATE
        else 0.0
    )
    np.testing.assert_array_equal(ours[0][2], leading)
    for state, final in zip(states, ours[1:], strict=True):
        np.testing.assert_allclose(final[2], state[2], rtol=1e-6)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["mlstm", "mlstm-exp"])
def test_stateful_chunks_equal_one_pass(case):
    """A stateful parallel MLSTM fed three chunks equals one pass over the whole sequence
    (the initial-state column of the parallel form)."""
    x, _ = data(case, time=12)
    whole = make_layer(case, return_sequences=True)
    chunked = make_layer(case, return_sequences=True, stateful=True)
    whole.build(x.shape)
    chunked.build(x.shape)
    chunked.set_weights(randomize(whole))
    pieces = [to_numpy(chunked(x[:, t : t + 4])) for t in range(0, 12, 4)]
    np.testing.assert_allclose(
        np.concatenate(pieces, axis=1), to_numpy(whole(x)), rtol=1e-5, atol=1e-6
    )


# ------------------------------------------------------------------------ long sequences
def graph(layer):
    """``layer`` as a ``tf.function`` on TensorFlow (a graph: fast steps); elsewhere the layer
    itself (JAX's time loop is already a compiled scan)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(layer)
    return layer


@pytest.mark.parametrize("case", ["slstm-exp", "mlstm-heads"])
def test_ten_thousand_steps_of_large_inputs_stay_finite(case):
    """10,000 steps of inputs ~ N(0, 30^2) (pre-activations in the hundreds, which overflow
    exp without the stabilizer): outputs and states stay finite, |h| <= 1 for the sLSTM; the
    parallel mLSTM, run over the same steps in stateful chunks, matches stepping it."""
    time = 10_000
    x, _ = data(case, batch=2, time=time, features=3, scale=30.0)
    options = {"return_sequences": True, "return_state": True}
    layer = (
        make_layer(case, parallel=False, **options)
        if case.startswith("m")
        else make_layer(case, **options)
    )
    layer.build(x.shape)
    weights = randomize(layer)
    outputs, *final = to_numpy(graph(layer)(x))
    assert np.isfinite(outputs).all() and all(np.isfinite(s).all() for s in final)
    assert np.abs(x @ weights[0]).max() > 100  # exp of that overflows float32
    if case.startswith("s"):
        assert np.abs(outputs).max() <= 1.0 + 1e-5
        return
    chunked = make_layer(case, return_sequences=True, stateful=True)
    chunked.build(x.shape)
    chunked.set_weights(layer.get_weights())
    step = graph(chunked)
    pieces = np.concatenate(
        [to_numpy(step(x[:, t : t + 1000])) for t in range(0, time, 1000)], axis=1
    )
    assert np.isfinite(pieces).all()
    for ours, theirs in zip(chunked.states[1:], final[1:], strict=True):  # C, n, m
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3 * np.abs(theirs).max())
    # h = C q / max(|n q|, 1) is ill-conditioned where n q cancels (|h| reaches 1e3 here):
    # float32 rounding differs there, so the outputs agree almost everywhere, not everywhere.
    close = np.isclose(pieces, outputs, rtol=1e-3, atol=1e-3)
    assert close.mean() > 0.99, close.mean()


# ----------------------------------------------------------- the official implementation
needs_official = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("xlstm") is None,
    reason="the official implementation needs torch and xlstm (pip install '.[torch]')",
)


@needs_official
@pytest.mark.parametrize("num_heads", [1, 2])
def test_slstm_equals_official_vanilla_slstm(num_heads):
    """xlstm's sLSTMCell (pure-PyTorch "vanilla" backend) with our weights ported gives the
    same outputs and final state [h, c, n, m] over several steps from the zero state and from
    a non-zero one."""
    import torch
    from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig

    d = UNITS // num_heads
    config = sLSTMCellConfig(
        hidden_size=UNITS,
        num_heads=num_heads,
        backend="vanilla",
        dtype="float32",
        enable_automatic_mixed_precision=False,
        output_shape="BSH",
    )
    official = sLSTMCell(config)
    layer = klv.SLSTM(UNITS, num_heads=num_heads, return_sequences=True, return_state=True)
    x, states = data("slstm", time=8)
    layer.build(x.shape)
    kernel, recurrent_kernel, bias = randomize(layer)
    with torch.no_grad():  # ours (heads, d, 4 d) is theirs (heads, d, 4, d); bias (heads, 4, d)
        official.recurrent_kernel[:] = torch.tensor(recurrent_kernel.reshape(num_heads, d, 4, d))
        official.bias[:] = torch.tensor(bias.reshape(4, num_heads, d).transpose(1, 0, 2))
    for initial in (None, states):
        ours, *final = to_numpy(layer(x, initial_state=initial))
        preactivations = torch.tensor(x.astype(np.float64) @ kernel, dtype=torch.float32)
        state = None if initial is None else torch.tensor(np.stack(initial))
        with torch.no_grad():
            theirs, their_state = official(preactivations, state)
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.stack(final), their_state.numpy(), rtol=1e-5, atol=1e-5)


@needs_official
@pytest.mark.parametrize("case", ["mlstm", "mlstm-heads"])
def test_mlstm_equals_official_functions(case):
    """xlstm's recurrent_step_stabilized_simple (stepped from our non-zero state) and
    parallel_stabilized_simple (from the zero state), fed our q, k, v and gate
    pre-activations with eps=0, give our h~ and memory. Their C is ours transposed (k v^T)."""
    import torch
    from xlstm.blocks.mlstm.backends import (
        parallel_stabilized_simple,
        recurrent_step_stabilized_simple,
    )

    layer = make_layer(case, return_sequences=True, return_state=True, dtype="float64")
    cell = layer.cell
    heads, d = cell.num_heads, cell.head_size
    x, states = data(case, dtype="float64")
    layer.build(x.shape)
    kernel, bias = randomize(layer)
    z = x @ kernel + bias
    q, k, v = (z[..., j * UNITS : (j + 1) * UNITS] for j in range(3))
    i_tilde = z[..., 3 * UNITS : 3 * UNITS + heads]
    f_tilde = z[..., 3 * UNITS + heads : 3 * UNITS + 2 * heads]
    o = 1.0 / (1.0 + np.exp(-z[..., 3 * UNITS + 2 * heads :]))

    def by_head(t):  # (batch, time, heads * d) -> (batch, heads, time, d)
        return torch.tensor(t.reshape(BATCH, -1, heads, d).transpose(0, 2, 1, 3))

    def gate(t):  # (batch, time, heads) -> (batch, heads, time, 1)
        return torch.tensor(t.transpose(0, 2, 1)[..., None])

    # parallel, from the zero state
    ours = to_numpy(layer(x)[0])
    h_tilde = parallel_stabilized_simple(
        by_head(q), by_head(k), by_head(v), gate(i_tilde), gate(f_tilde), eps=0.0
    )
    theirs = h_tilde.numpy().transpose(0, 2, 1, 3).reshape(BATCH, TIME, UNITS) * o
    np.testing.assert_allclose(ours, theirs, **float64_tolerance(1e-9, 1e-12))
    # recurrent, from our non-zero state
    _, C, n, m = states
    C = torch.tensor(C.reshape(BATCH, heads, d, d).transpose(0, 1, 3, 2))
    n = torch.tensor(n.reshape(BATCH, heads, d, 1))
    m = torch.tensor(m.reshape(BATCH, heads, 1, 1))
    outputs = []
    for t in range(TIME):
        h_tilde, (C, n, m) = recurrent_step_stabilized_simple(
            C,
            n,
            m,
            *(by_head(a[:, t : t + 1]) for a in (q, k, v)),
            gate(i_tilde[:, t : t + 1]),
            gate(f_tilde[:, t : t + 1]),
            eps=0.0,
        )
        outputs.append(h_tilde.numpy().reshape(BATCH, UNITS) * o[:, t])
    ours, _, C_T, n_T, m_T = to_numpy(layer(x, initial_state=states))
    tolerance = float64_tolerance(1e-9, 1e-12)
    np.testing.assert_allclose(ours, np.stack(outputs, axis=1), **tolerance)
    C_T_theirs = C.numpy().transpose(0, 1, 3, 2).reshape(BATCH, -1)
    np.testing.assert_allclose(C_T, C_T_theirs, **float64_tolerance(1e-9))
    np.testing.assert_allclose(n_T, n.numpy().reshape(BATCH, -1), **tolerance)
    np.testing.assert_allclose(m_T, m.numpy().reshape(BATCH, -1), **float64_tolerance(1e-12))


# ------------------------------------------------------------------ the generic contract
def test_cells_in_rnn_bidirectional_stack_and_keras_file(tmp_path):
    """Both cells in keras.layers.RNN, a StackedRNNCells of both, Bidirectional SLSTM and
    MLSTM (parallel) layers, through a .keras round trip with identical outputs."""
    inputs = keras.Input((TIME, FEATURES))
    stack = keras.layers.RNN(
        keras.layers.StackedRNNCells([klv.SLSTMCell(UNITS, num_heads=2), klv.MLSTMCell(4)]),
        return_sequences=True,
    )(inputs)
    both = keras.layers.Bidirectional(klv.MLSTM(UNITS, num_heads=3, return_sequences=True))(stack)
    last = keras.layers.Bidirectional(klv.SLSTM(4, forget_activation="exp"))(both)
    model = keras.Model(inputs, [stack, both, last])
    randomize(model, std=0.3)
    x, _ = data("slstm")
    outputs = to_numpy(model(x))
    assert [o.shape for o in outputs] == [(BATCH, TIME, 4), (BATCH, TIME, 2 * UNITS), (BATCH, 8)]
    assert all(np.isfinite(o).all() for o in outputs)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    for before, after in zip(outputs, to_numpy(loaded(x)), strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("case", ["slstm-exp", "mlstm-exp"])
def test_config_round_trip(case):
    settings = {"kernel_regularizer": keras.regularizers.L2(0.01), "dropout": 0.25, "seed": 5}
    layer = make_layer(case, return_sequences=True, go_backwards=True, **settings)
    if case.startswith("m"):
        layer = make_layer(case, parallel=False, return_sequences=True, **settings)
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    for name in ("num_heads", "forget_activation", "dropout", "go_backwards"):
        assert getattr(clone, name) == getattr(layer, name)
    assert getattr(clone, "parallel", None) == getattr(layer, "parallel", None)
    cell = make_cell(case)
    assert type(cell).from_config(cell.get_config()).get_config() == cell.get_config()
    x, states = data(case)
    layer.build(x.shape)
    clone.build(x.shape)
    clone.set_weights(randomize(layer))
    np.testing.assert_array_equal(
        to_numpy(layer(x, initial_state=states)), to_numpy(clone(x, initial_state=states))
    )


@pytest.mark.parametrize("case", ["slstm-heads", "mlstm-heads"])
def test_jit_compile_training(case):
    x, states = data(case)
    layer = make_layer(case, return_sequences=True)
    layer.build(x.shape)
    randomize(layer, std=0.3)
    eager = to_numpy(layer(x, initial_state=states))
    compiled, losses = xla_training(layer, x, states, target=0.5, steps=4)
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-5)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("case", ["slstm-exp", "mlstm-heads"])
def test_mixed_precision(case, policy):
    """float32 variables, low-precision outputs and states close to float32; the gate and
    stabilizer arithmetic runs in float32 inside, so large pre-activations stay finite."""
    options = {"return_sequences": True, "return_state": True}
    x, states = data(case)
    mixed = make_layer(case, **options)
    full = make_layer(case, dtype="float32", **options)
    mixed.build(x.shape)
    full.build(x.shape)
    full.set_weights(randomize(mixed, std=0.3))
    assert mixed.cell.compute_dtype == policy.compute_dtype
    assert all(w.dtype == "float32" for w in mixed.weights)
    results = mixed(x, initial_state=states)
    for low, high in zip(results, to_numpy(full(x, initial_state=states)), strict=True):
        assert keras.backend.standardize_dtype(low.dtype) == policy.compute_dtype
        np.testing.assert_allclose(to_numpy(low).astype("float32"), high, rtol=5e-2, atol=5e-2)
    # Large pre-activations: the states stay finite (the stabilizer), and so does the sLSTM's
    # output (|h| <= 1). The mLSTM's output C q / max(|n q|, 1) is unbounded where n q cancels
    # (5e3 in float32 here), so float16 may overflow it; the paper follows it with a norm.
    big, _ = data(case, time=200, scale=30.0)
    outputs, *final = (r.astype("float32") for r in to_numpy(mixed(big)))
    assert all(np.isfinite(s).all() for s in final)
    if case.startswith("s"):
        assert np.isfinite(outputs).all() and np.abs(outputs).max() <= 1.0 + 1e-2


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("num_heads", [4, 0, -2, 2.0, "2", True, None])
@pytest.mark.parametrize("klass", [klv.SLSTMCell, klv.SLSTM, klv.MLSTMCell, klv.MLSTM])
def test_num_heads_must_divide_units(klass, num_heads):
    with pytest.raises(ValueError, match="`num_heads`"):
        klass(UNITS, num_heads=num_heads)


@pytest.mark.parametrize("value", ["tanh", "Sigmoid", None, 1])
@pytest.mark.parametrize("klass", [klv.SLSTMCell, klv.SLSTM, klv.MLSTMCell, klv.MLSTM])
def test_unknown_forget_activation(klass, value):
    with pytest.raises(ValueError, match="`forget_activation`"):
        klass(UNITS, forget_activation=value)


@pytest.mark.parametrize(
    "argument, value",
    [
        ("activation", "relu"),
        ("recurrent_activation", "sigmoid"),
        ("recurrent_initializer", "zeros"),
        ("recurrent_regularizer", "l2"),
        ("recurrent_constraint", "non_neg"),
        ("recurrent_dropout", 0.2),
    ],
)
@pytest.mark.parametrize("klass", [klv.MLSTMCell, klv.MLSTM])
def test_mlstm_refuses_recurrent_arguments(klass, argument, value):
    """The mLSTM has no recurrent weights: such arguments would be silently ignored."""
    with pytest.raises(ValueError, match=f"`{argument}`"):
        klass(UNITS, **{argument: value})


def test_mlstm_layer_arguments():
    with pytest.raises(ValueError, match="`parallel`"):
        klv.MLSTM(UNITS, parallel="yes")
    with pytest.raises(ValueError, match="`unroll=True`"):
        klv.MLSTM(UNITS, unroll=True)
    assert klv.MLSTM(UNITS, parallel=False, unroll=True).unroll


def test_gate_statistics_log_the_stabilized_gates(tmp_path):
    """GateStatistics runs on both layers (the mLSTM's matrix state included) and describes
    the stabilized gates with the cells' meanings."""
    from tensorboard.backend.event_processing import event_accumulator

    inputs = keras.Input((TIME, FEATURES))
    hidden = klv.SLSTM(UNITS, num_heads=2, return_sequences=True, name="s")(inputs)
    last = klv.MLSTM(UNITS, num_heads=3, name="m")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(last))
    model.compile("adam", "mse")
    x, _ = data("slstm", batch=6)
    callback = klv.GateStatistics(str(tmp_path), x[:BATCH], mask=padding_mask())
    model.fit(x, x[:, -1, :1], epochs=1, verbose=0, callbacks=[callback])
    events = event_accumulator.EventAccumulator(str(tmp_path / "gates"), {"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    for layer, gates in (
        ("s", ("input", "forget", "candidate", "output")),
        ("m", ("input", "forget", "output")),
    ):
        for gate in gates:
            assert f"gates/{layer}/{gate}/right_saturated" in tags
    assert "write outweighs" in klv.gates.describe(model.layers[1].cell, "input", "right_saturated")


JAX_SCRIPT = """
import sys
sys.modules["tensorflow"] = None  # the package must run without TensorFlow
import numpy as np, keras_lstm_variants as klv
rng = np.random.default_rng(0)
x = rng.normal(size=(3, 7, 4)).astype("float32")
mask = np.ones((3, 7), bool); mask[0, 5:] = False; mask[1, :3] = False
for options in [{}, {"go_backwards": True}, {"zero_output_for_mask": True}]:
    kw = dict(num_heads=2, return_sequences=True, return_state=True, **options)
    parallel, stepped = klv.MLSTM(6, **kw), klv.MLSTM(6, parallel=False, **kw)
    parallel.build(x.shape); stepped.build(x.shape)
    parallel.set_weights([rng.normal(0, .5, w.shape) for w in parallel.get_weights()])
    stepped.set_weights(parallel.get_weights())
    states = [rng.normal(0, .5, (3, n)).astype("float32") for n in parallel.cell.state_size]
    ours = parallel(x, initial_state=states, mask=mask)
    theirs = stepped(x, initial_state=states, mask=mask)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    if not options:  # JAX's loop emits the carried h_0 at leading masked steps, not zeros
        np.testing.assert_allclose(ours[0][1, 0], states[0][1], rtol=1e-6)
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_parallel_equals_stepping_on_jax_without_tensorflow():
    """Under KERAS_BACKEND=jax, with TensorFlow made unimportable, the parallel MLSTM equals
    stepping the cell with masks (JAX's own rule at leading masked steps), backwards, and
    zero_output_for_mask."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


@pytest.mark.tensorflow_only("exports a SavedModel and TFLite")
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_saved_model_streams_and_tflite(tmp_path):
    """A SLSTM -> parallel MLSTM model exports: serving_default equals Keras at any length,
    the streaming ``step`` signature (which steps the cells) reproduces every output of the
    parallel layer, and TFLite equals Keras at a fixed length."""
    import tensorflow as tf

    inputs = keras.Input((None, FEATURES))
    hidden = klv.SLSTM(UNITS, num_heads=2, return_sequences=True, name="s")(inputs)
    hidden = klv.MLSTM(UNITS, num_heads=3, return_sequences=True, name="m")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
    randomize(model, std=0.5)
    x, _ = data("slstm")
    expected = np.asarray(model(x))
    path = klv.export_saved_model(model, str(tmp_path / "model"), streaming=True)
    loaded = tf.saved_model.load(path)
    served = loaded.signatures["serving_default"](inputs=tf.constant(x[:, :5]))["output"]
    np.testing.assert_allclose(served, expected[:, :5], atol=1e-5)
    states = dict(loaded.signatures["initial_state"](batch_size=BATCH))
    assert sorted(states) == ["m_C", "m_h", "m_m", "m_n", "s_c", "s_h", "s_m", "s_n"]
    for t in range(TIME):
        states = dict(loaded.signatures["step"](x_t=tf.constant(x[:, t]), **states))
        np.testing.assert_allclose(states.pop("output"), expected[:, t], atol=1e-5)
    lite = klv.export_tflite(model, tmp_path / "m.tflite", time_steps=TIME, batch_size=BATCH)
    interpreter = tf.lite.Interpreter(model_path=str(lite))
    serve = interpreter.get_signature_runner("serving_default")
    np.testing.assert_allclose(serve(inputs=x)["output"], expected, atol=1e-5)

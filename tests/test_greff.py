"""Greff et al. 2017's nine LSTM configurations (issue 9 section 1): GreffLSTMCell / GreffLSTM.

Every variant is checked against the NumPy transcription of the paper
(``reference.greff_step``, one function with the paper's switches) with random weights
(N(0, 0.5^2)), non-zero initial states (FGR: non-zero previous gates too), T = 6, batch 3 and
padding on either side: outputs, final states, gates, and gradients (autodiff in float64
against central differences of the oracle). Configurations that the package also has as other
cells agree with them; the parameter counts follow the paper's definitions; and every variant
runs everywhere a cell goes (wrappers, ``.keras``, config, XLA, mixed precision, gate tracing,
streaming export).
"""

import functools

import keras
import numpy as np
import pytest
import reference
import tensorflow as tf
from helpers import padding_mask, randomize, rng

import keras_lstm_variants as klv

VARIANTS = klv.GREFF_VARIANTS
BATCH, TIME, FEATURES, UNITS = 3, 6, 4, 3
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
SEQUENCES = {"return_sequences": True, "return_state": True}


def make_layer(variant, path="layer", units=UNITS, dtype=None, **kwargs):
    """``GreffLSTM`` (path "layer", its own time loop) or ``keras.layers.RNN(GreffLSTMCell)``."""
    if path == "layer":
        return klv.GreffLSTM(units, variant=variant, dtype=dtype, **kwargs)
    cell_kwargs = {
        k: kwargs.pop(k) for k in ("dropout", "recurrent_dropout", "seed") if k in kwargs
    }
    cell = klv.GreffLSTMCell(units, variant=variant, dtype=dtype, **cell_kwargs)
    return keras.layers.RNN(cell, dtype=dtype, **kwargs)


def data(variant, seed=1, batch=BATCH, time=TIME, features=FEATURES, units=UNITS, dtype="float32"):
    """Inputs and non-zero initial states: h, c ~ N(0, 0.5^2); FGR's previous gates in (0, 1)."""
    generator = rng(seed)
    x = generator.normal(size=(batch, time, features)).astype(dtype)
    states = [generator.normal(0.0, 0.5, (batch, units)).astype(dtype) for _ in range(2)]
    if variant == "FGR":
        states.append(generator.uniform(0.05, 0.95, (batch, 3 * units)).astype(dtype))
    return x, states


def oracle(variant, weights):
    """``reference.greff_step`` for ``variant`` with the package's weight list bound to it,
    read in issue 9's documented order: kernel, recurrent kernel, bias, one peephole vector
    per gate that has one (input, forget, output), FGR's gate-recurrent kernel."""
    changes = reference.GREFF_CHANGES[variant]
    _, peephole_gates = reference.greff_layout(**changes)
    kernel, recurrent_kernel, bias, *rest = weights
    peepholes = dict(zip(peephole_gates, rest[: len(peephole_gates)], strict=True))
    rest = rest[len(peephole_gates) :]
    gate_recurrent_kernel = rest.pop(0) if changes.get("gate_recurrence") else None
    assert not rest, "no weights beyond the documented ones"
    switches = {k: v for k, v in changes.items() if k not in ("has_peepholes", "gate_recurrence")}
    return functools.partial(
        reference.greff_step,
        kernel=kernel,
        recurrent_kernel=recurrent_kernel,
        bias=bias,
        peepholes=peepholes,
        gate_recurrent_kernel=gate_recurrent_kernel,
        **switches,
    )


def built(layer, x):
    layer.build(x.shape)
    return layer


# ------------------------------------------------------------------- weights


#: From the paper (section III): (fused gate blocks, peephole vectors, extra units x units
#: matrices). V has the input, forget, output gates and the block input, three peepholes; a
#: removed gate (NIG, NFG, NOG) takes its block and its peephole with it; CIFG computes f from
#: i (no forget block, no forget peephole); NP drops the peepholes; FGR adds the nine
#: gate-to-gate matrices R_{a->b}, a, b in {i, f, o}.
PAPER_PARAMETERS = {
    "V": (4, 3, 0),
    "NIG": (3, 2, 0),
    "NFG": (3, 2, 0),
    "NOG": (3, 2, 0),
    "NIAF": (4, 3, 0),
    "NOAF": (4, 3, 0),
    "NP": (4, 0, 0),
    "CIFG": (3, 2, 0),
    "FGR": (4, 3, 9),
}

#: The weights' names and shapes as issue 9 specifies (u = units, n = input size).
LAYOUTS = {
    "V": ("ifgo", "ifo"),
    "NIG": ("fgo", "fo"),
    "NFG": ("igo", "io"),
    "NOG": ("ifg", "if"),
    "NIAF": ("ifgo", "ifo"),
    "NOAF": ("ifgo", "ifo"),
    "NP": ("ifgo", ""),
    "CIFG": ("igo", "io"),
    "FGR": ("ifgo", "ifo"),
}
GATE = {"i": "input", "f": "forget", "g": "candidate", "o": "output"}


def test_variants_are_the_papers_nine_in_order():
    assert klv.GREFF_VARIANTS == ("V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR")
    assert klv.VARIANTS["greff"] == (klv.GreffLSTMCell, klv.GreffLSTM)
    assert klv.GreffLSTM(2).variant == "V"


@pytest.mark.parametrize("units, features", [(UNITS, FEATURES), (32, 19)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_and_parameter_count_follow_the_paper(variant, units, features):
    cell = klv.GreffLSTMCell(units, variant=variant)
    cell.build((None, features))
    blocks, peepholes, matrices = PAPER_PARAMETERS[variant]
    per_block = features * units + units * units + units  # W, R and b of one gate
    expected = blocks * per_block + peepholes * units + matrices * units * units
    assert cell.count_params() == expected
    assert len(cell.trainable_weights) == len(cell.weights)

    fused, peephole_gates = LAYOUTS[variant]
    shapes = [
        ("kernel", (features, len(fused) * units)),
        ("recurrent_kernel", (units, len(fused) * units)),
        ("bias", (len(fused) * units,)),
    ]
    shapes += [(f"{GATE[g]}_gate_peephole_weights", (units,)) for g in peephole_gates]
    if variant == "FGR":
        shapes.append(("gate_recurrent_kernel", (3 * units, 3 * units)))
    assert [(w.name, tuple(w.shape)) for w in cell.weights] == shapes
    assert cell.blocks == tuple(GATE[g] for g in fused)
    assert reference.greff_layout(**reference.GREFF_CHANGES[variant]) == (
        cell.blocks,
        tuple(GATE[g] for g in peephole_gates),
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_unit_forget_bias(variant):
    """b_f starts at 1 where there is a forget gate; CIFG's b_i at -1 (f = 1 - i); NFG none."""
    for unit_forget_bias in (True, False):
        if variant == "NFG" and unit_forget_bias:
            continue
        cell = klv.GreffLSTMCell(UNITS, variant=variant, unit_forget_bias=unit_forget_bias)
        cell.build((None, FEATURES))
        blocks = np.split(np.asarray(cell.bias), len(cell.blocks))
        blocks = dict(zip(cell.blocks, blocks, strict=True))
        expected = dict.fromkeys(cell.blocks, 0.0)
        if unit_forget_bias and variant == "CIFG":
            expected["input"] = -1.0
        elif unit_forget_bias:
            expected["forget"] = 1.0
        for gate, block in blocks.items():
            np.testing.assert_array_equal(block, np.full(UNITS, expected[gate]), err_msg=gate)
    assert klv.GreffLSTMCell(2, variant=variant).unit_forget_bias == (variant != "NFG")


# ----------------------------------------------------------------- numerics


@pytest.mark.parametrize("path", ["rnn", "layer"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_matches_reference_with_padding(variant, path):
    """Outputs and final states equal the oracle, with padding on the right and on the left."""
    x, states = data(variant)
    layer = built(make_layer(variant, path, **SEQUENCES), x)
    weights = randomize(layer)
    mask = padding_mask(BATCH, TIME)
    for m in (None, mask):
        outputs, *final = layer(x, initial_state=states, mask=m)
        expected, expected_final = reference.run(oracle(variant, weights), x, states, mask=m)
        np.testing.assert_allclose(outputs, expected, **TOLERANCE)
        assert len(final) == len(expected_final) == (3 if variant == "FGR" else 2)
        for state, expected_state in zip(final, expected_final, strict=True):
            np.testing.assert_allclose(state, expected_state, **TOLERANCE)


@pytest.mark.parametrize("variant", VARIANTS)
def test_backwards_matches_reference(variant):
    x, states = data(variant)
    layer = built(make_layer(variant, go_backwards=True, **SEQUENCES), x)
    weights = randomize(layer)
    outputs, *final = layer(x, initial_state=states)
    expected, expected_final = reference.run(oracle(variant, weights), x, states, go_backwards=True)
    np.testing.assert_allclose(outputs, expected, **TOLERANCE)
    for state, expected_state in zip(final, expected_final, strict=True):
        np.testing.assert_allclose(state, expected_state, **TOLERANCE)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gates_match_reference(variant):
    """One step's gates: only those the variant has (NIG: no input), equal to the oracle's."""
    cell = klv.GreffLSTMCell(UNITS, variant=variant)
    cell.build((None, FEATURES))
    weights = randomize(cell)
    x, states = data(variant)
    gates, new_states = cell.gates(x[:, 0], states)
    expected_gates, expected_states = oracle(variant, weights)(x[:, 0], states)
    assert tuple(gates) == cell.gate_names == tuple(expected_gates)
    removed = {"NIG": "input", "NFG": "forget", "NOG": "output"}.get(variant)
    assert removed not in gates
    for name, gate in gates.items():
        np.testing.assert_allclose(gate, expected_gates[name], **TOLERANCE, err_msg=name)
    for state, expected_state in zip(new_states, expected_states, strict=True):
        np.testing.assert_allclose(state, expected_state, **TOLERANCE)


def _central_differences(evaluate, arrays, eps=1e-6):
    """d evaluate(arrays) / d each array, by central differences one entry at a time."""
    grads = []
    for k, array in enumerate(arrays):
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            shifted = []
            for sign in (1.0, -1.0):
                perturbed = [a.copy() for a in arrays]
                perturbed[k][index] += sign * eps
                shifted.append(evaluate(perturbed))
            grad[index] = (shifted[0] - shifted[1]) / (2 * eps)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_match_central_differences_of_the_oracle(variant):
    """Autodiff (float64) of a random probe of every output and final state, with respect to
    the inputs, the initial states and every weight, equals central differences of the same
    probe of the NumPy oracle: the gradients are those of the paper's equations."""
    units, features, time = 2, 2, 5
    x, states = data(variant, time=time, features=features, units=units, dtype="float64")
    mask = padding_mask(BATCH, time)
    layer = built(make_layer(variant, units=units, dtype="float64", **SEQUENCES), x)
    weights = randomize(layer)
    shapes = [(BATCH, time, units)] + [s.shape for s in states]
    probes = [np.random.default_rng(7 + k).normal(size=shape) for k, shape in enumerate(shapes)]

    inputs = [tf.constant(x)] + [tf.constant(s) for s in states]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        results = layer(inputs[0], initial_state=inputs[1:], mask=mask)
        loss = sum(tf.reduce_sum(r * p) for r, p in zip(results, probes, strict=True))
    grads = tape.gradient(loss, inputs + list(layer.trainable_weights))

    count = 1 + len(states)

    def evaluate(arrays):
        step = oracle(variant, arrays[count:])
        outputs, final = reference.run(step, arrays[0], arrays[1:count], mask=mask)
        return sum(np.sum(r * p) for r, p in zip([outputs, *final], probes, strict=True))

    expected = _central_differences(evaluate, [x, *states, *weights])
    assert len(grads) == len(expected)
    for grad, fd in zip(grads, expected, strict=True):
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


# ------------------------------------------------- equal configurations agree


def assert_same_runs(ours, theirs, x, states, **tolerance):
    """Both layers give the same outputs and final states, with padding on either side;
    bit for bit without ``tolerance``."""
    mask = padding_mask()
    results = [layer(x, initial_state=states, mask=mask) for layer in (ours, theirs)]
    for a, b in zip(*results, strict=True):
        if tolerance:
            np.testing.assert_allclose(a, b, **tolerance)
        else:
            np.testing.assert_array_equal(a, b)


def test_V_is_the_peephole_lstm():
    x, states = data("V")
    greff = built(klv.GreffLSTM(UNITS, variant="V", **SEQUENCES), x)
    peephole = built(klv.PeepholeLSTM(UNITS, **SEQUENCES), x)
    assert [w.name for w in greff.weights] == [w.name for w in peephole.weights]
    peephole.set_weights(randomize(greff))
    assert_same_runs(greff, peephole, x, states)


def test_NP_is_the_lstm_and_keras_lstm():
    x, states = data("NP")
    greff = built(klv.GreffLSTM(UNITS, variant="NP", **SEQUENCES), x)
    lstm = built(klv.LSTM(UNITS, **SEQUENCES), x)
    stock = built(keras.layers.LSTM(UNITS, use_cudnn=False, **SEQUENCES), x)
    weights = randomize(greff)
    lstm.set_weights(weights)
    stock.set_weights(weights)
    assert_same_runs(greff, lstm, x, states)
    assert_same_runs(greff, stock, x, states, rtol=1e-6, atol=1e-6)


def cifg_weights_from_greff(weights):
    """GreffLSTMCell(variant="CIFG") weights -> CIFGLSTMCell(peepholes=("forget", "output")):
    f = 1 - i = 1 - sigma(a_i) = sigma(-a_i), so the forget block is the negated input block
    (kernel, recurrent kernel, bias columns and peephole); g, o and p_o are unchanged."""
    kernel, recurrent_kernel, bias, p_i, p_o = weights
    negated = []
    for w in (kernel, recurrent_kernel, bias):
        i, g, o = np.split(w, 3, axis=-1)
        negated.append(np.concatenate([-i, g, o], axis=-1))
    return [*negated, -p_i, p_o]


def test_CIFG_is_the_cifg_cell_under_f_equals_one_minus_i():
    x, states = data("CIFG")
    greff = built(klv.GreffLSTM(UNITS, variant="CIFG", **SEQUENCES), x)
    cifg = built(klv.CIFGLSTM(UNITS, peepholes=("forget", "output"), **SEQUENCES), x)
    weights = randomize(greff)
    cifg.set_weights(cifg_weights_from_greff(weights))
    assert_same_runs(greff, cifg, x, states, rtol=1e-6, atol=1e-6)
    # The mapping matters: without negating the input block the two disagree.
    cifg.set_weights(weights)
    with pytest.raises(AssertionError):
        assert_same_runs(greff, cifg, x, states, rtol=1e-2, atol=1e-2)
    # unit_forget_bias maps too: Greff's initial b_i = -1 is CIFGLSTMCell's initial b_f = 1.
    cells = [klv.GreffLSTMCell(UNITS, variant="CIFG"), klv.CIFGLSTMCell(UNITS)]
    for cell in cells:
        cell.build((None, FEATURES))
    initial = [np.asarray(w) for w in cells[0].weights]
    np.testing.assert_array_equal(cifg_weights_from_greff(initial)[2], cells[1].bias)

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
from helpers import (
    central_differences,
    gradients,
    non_default_settings_of_every_cell,
    padding_mask,
    randomize,
    rng,
    setter,
    to_numpy,
)

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


def data(
    variant,
    seed=1,
    batch=BATCH,
    time=TIME,
    features=FEATURES,
    units=UNITS,
    dtype="float32",
    output_units=None,
):
    """Inputs and non-zero initial states: h, c ~ N(0, 0.5^2); FGR's previous gates in (0, 1).

    ``output_units``: the width of h when it differs from c's (a projection)."""
    generator = rng(seed)
    x = generator.normal(size=(batch, time, features)).astype(dtype)
    states = [
        generator.normal(0.0, 0.5, (batch, width)).astype(dtype)
        for width in (output_units or units, units)
    ]
    if variant == "FGR":
        states.append(generator.uniform(0.05, 0.95, (batch, 3 * units)).astype(dtype))
    return x, states


def oracle(variant, weights, layer_norm=False, proj_units=None, zoneout=0.0, **options):
    """``reference.greff_step`` for ``variant`` with the package's weight list bound to it,
    read in issue 9's documented order: kernel, recurrent kernel, bias, one peephole vector
    per gate that has one (input, forget, output); then the options' weights (layer norm's
    kernel, recurrent and cell gamma and beta; the projection kernel); last FGR's
    gate-recurrent kernel. ``options`` (cell_clip, proj_clip) go to the oracle as they are;
    ``zoneout`` is applied as its inference expectation."""
    changes = reference.GREFF_CHANGES[variant]
    _, peephole_gates = reference.greff_layout(**changes)
    kernel, recurrent_kernel, bias, *rest = weights
    peepholes = dict(zip(peephole_gates, rest[: len(peephole_gates)], strict=True))
    del rest[: len(peephole_gates)]
    if layer_norm:
        norms = {name: (rest.pop(0), rest.pop(0)) for name in ("kernel", "recurrent", "cell")}
        options["norms"] = norms
    if proj_units:
        options["projection"] = rest.pop(0)
    gate_recurrent_kernel = rest.pop(0) if changes.get("gate_recurrence") else None
    assert not rest, "no weights beyond the documented ones"
    switches = {k: v for k, v in changes.items() if k not in ("has_peepholes", "gate_recurrence")}
    zoneout_d = zoneout if isinstance(zoneout, (tuple, list)) else (zoneout, zoneout)
    return functools.partial(
        reference.greff_step,
        kernel=kernel,
        recurrent_kernel=recurrent_kernel,
        bias=bias,
        peepholes=peepholes,
        gate_recurrent_kernel=gate_recurrent_kernel,
        zoneout_d=tuple(zoneout_d),
        **switches,
        **options,
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
    layer = klv.GreffLSTM(2, "NIG")  # variant is the second argument, as for the cell
    assert (layer.variant, layer.return_sequences) == ("NIG", False)
    assert klv.GreffLSTMCell(2, "NIG").variant == "NIG"


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
        outputs, *final = to_numpy(layer(x, initial_state=states, mask=m))
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
    outputs, *final = to_numpy(layer(x, initial_state=states))
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
    gates, new_states = to_numpy(cell.gates(x[:, 0], states))
    expected_gates, expected_states = oracle(variant, weights)(x[:, 0], states)
    assert tuple(gates) == cell.gate_names == tuple(expected_gates)
    removed = {"NIG": "input", "NFG": "forget", "NOG": "output"}.get(variant)
    assert removed not in gates
    for name, gate in gates.items():
        np.testing.assert_allclose(gate, expected_gates[name], **TOLERANCE, err_msg=name)
    for state, expected_state in zip(new_states, expected_states, strict=True):
        np.testing.assert_allclose(state, expected_state, **TOLERANCE)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.float64_finite_differences
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

    current = [x, *states, *weights]
    expected = [
        central_differences(lambda: evaluate(current), array, setter(current, k))
        for k, array in enumerate(list(current))
    ]
    assert len(grads) == len(expected)
    for grad, fd in zip(grads, expected, strict=True):
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


# ------------------------------------------------- equal configurations agree


def assert_same_runs(ours, theirs, x, states, **tolerance):
    """Both layers give the same outputs and final states, with padding on either side;
    bit for bit without ``tolerance``."""
    mask = padding_mask()
    results = [to_numpy(layer(x, initial_state=states, mask=mask)) for layer in (ours, theirs)]
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


# ------------------------------------------------------------------ contract


def all_variants_model():
    """Each variant's layer inside ``Bidirectional``, and all nine cells in one
    ``StackedRNNCells`` (FGR's state has three parts), side by side in one functional model."""
    inputs = keras.Input((TIME, FEATURES))
    outputs = [
        keras.layers.Bidirectional(
            klv.GreffLSTM(UNITS, variant=variant, return_sequences=True), name=variant.lower()
        )(inputs)
        for variant in VARIANTS
    ]
    stack = [klv.GreffLSTMCell(UNITS, variant=variant) for variant in VARIANTS]
    outputs.append(keras.layers.RNN(keras.layers.StackedRNNCells(stack), name="stack")(inputs))
    return keras.Model(inputs, outputs)


def test_wrappers_and_keras_file_round_trip(tmp_path):
    model = all_variants_model()
    randomize(model)
    x, _ = data("V")
    outputs = to_numpy(model(x))
    shapes = [(BATCH, TIME, 2 * UNITS)] * len(VARIANTS) + [(BATCH, UNITS)]
    assert [o.shape for o in outputs] == shapes
    assert all(np.isfinite(o).all() for o in outputs)

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    for variant in VARIANTS:
        assert loaded.get_layer(variant.lower()).forward_layer.variant == variant
    for before, after in zip(model.layers, loaded.layers, strict=True):
        assert type(before) is type(after)
        assert [(w.name, w.shape) for w in before.weights] == [
            (w.name, w.shape) for w in after.weights
        ]
    for before, after in zip(outputs, to_numpy(loaded(x)), strict=True):
        np.testing.assert_array_equal(before, after)


def test_weights_of_one_variant_do_not_load_into_another(tmp_path):
    """V and NIAF have the same weight shapes but not the same equations: loading refuses."""

    def model(variant):
        layer = klv.GreffLSTM(UNITS, variant=variant)
        return keras.Sequential([keras.Input((TIME, FEATURES)), layer])

    model("V").save_weights(tmp_path / "v.weights.h5")
    with pytest.raises(ValueError, match="variant='V'"):
        model("NIAF").load_weights(tmp_path / "v.weights.h5")


def non_default_settings(variant):
    settings = {**non_default_settings_of_every_cell(), "unit_forget_bias": False}
    if variant != "NP":
        settings["peephole_initializer"] = "ones"
        settings["peephole_regularizer"] = keras.regularizers.L1(0.1)
    if variant == "FGR":
        settings["gate_recurrent_initializer"] = "zeros"
        settings["gate_recurrent_constraint"] = keras.constraints.NonNeg()
    return settings


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_round_trip(variant):
    """get_config/from_config reproduce cells and layers, so they compute the same thing."""
    settings = non_default_settings(variant)
    cell = klv.GreffLSTMCell(UNITS, variant=variant, **settings)
    clone = klv.GreffLSTMCell.from_config(cell.get_config())
    assert clone.get_config() == cell.get_config()
    assert cell.get_config()["variant"] == variant and "peepholes" not in cell.get_config()

    layer = klv.GreffLSTM(UNITS, variant=variant, return_sequences=True, **settings)
    layer_clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(layer_clone) is klv.GreffLSTM
    assert layer_clone.get_config() == layer.get_config()
    assert (layer_clone.variant, layer_clone.peepholes) == (variant, layer.peepholes)

    x, states = data(variant)
    built(layer, x)
    built(layer_clone, x)
    layer_clone.set_weights(randomize(layer))
    np.testing.assert_array_equal(
        to_numpy(layer(x, initial_state=states)), to_numpy(layer_clone(x, initial_state=states))
    )
    if variant == "FGR":
        assert layer.cell.gate_recurrent_initializer.__class__.__name__ == "Zeros"


def parallel_model(dtype=None, **options):
    """The nine layers side by side on one input, all sequences out (one XLA compile)."""
    inputs = keras.Input((TIME, FEATURES))
    outputs = [
        klv.GreffLSTM(
            UNITS, variant=v, return_sequences=True, dtype=dtype, name=v.lower(), **options
        )(inputs)
        for v in VARIANTS
    ]
    return keras.Model(inputs, keras.layers.Concatenate(dtype=dtype)(outputs))


def test_jit_compile():
    """Under XLA (``jit_compile=True``, what ``model.compile(jit_compile=True)`` uses), the
    forward pass and the gradients of every weight of every variant equal eager ones."""
    model = parallel_model()
    x, _ = data("V")
    randomize(model, std=0.3)

    def loss(x):
        outputs = model(x, training=True)
        return keras.ops.mean(keras.ops.square(outputs)), outputs

    (_, *eager_grads), eager = gradients(model, loss, [x], has_aux=True)
    (_, *grads), compiled = gradients(model, loss, [x], jit_compile=True, has_aux=True)
    np.testing.assert_allclose(compiled, eager, **TOLERANCE)
    assert len(grads) == len(model.weights)
    for grad, expected, weight in zip(grads, eager_grads, model.weights, strict=True):
        assert np.abs(expected).max() > 0, weight.path
        np.testing.assert_allclose(grad, expected, **TOLERANCE, err_msg=weight.path)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    """Variables stay float32, the computation runs in the low precision, close to float32."""
    x, _ = data("V")
    mixed, full = parallel_model(dtype=policy), parallel_model(dtype="float32")
    full.set_weights(randomize(mixed, std=0.3))
    layers = [layer for layer in mixed.layers if isinstance(layer, klv.GreffLSTM)]
    assert all(layer.cell.compute_dtype == policy[len("mixed_") :] for layer in layers)
    assert all(w.dtype == "float32" for w in mixed.weights)
    low = mixed(x)
    assert keras.backend.standardize_dtype(low.dtype) == policy[len("mixed_") :]
    atol = 5e-2 if policy == "mixed_float16" else 1.5e-1
    np.testing.assert_allclose(to_numpy(low).astype("float32"), to_numpy(full(x)), atol=atol)


# --------------------------------------------------------- gates and export


def test_trace_gates_reports_the_gates_each_variant_has():
    model = parallel_model()
    weights = randomize(model)
    x, _ = data("V")
    mask = padding_mask()
    traces = klv.trace_gates(model, x, mask=mask)
    assert set(traces) == {v.lower() for v in VARIANTS}
    offset = 0
    for variant in VARIANTS:
        trace = traces[variant.lower()]
        cell = model.get_layer(variant.lower()).cell
        count = len(cell.weights)
        step = oracle(variant, weights[offset : offset + count])
        offset += count
        zeros = [np.zeros((BATCH, w)) for w in cell.state_size]
        expected_gates, _ = step(x[:, 0], zeros)
        states = ["c", "gates", "h"] if variant == "FGR" else ["c", "h"]
        assert list(trace) == [*expected_gates, *states], variant
        removed = {"NIG": "input", "NFG": "forget", "NOG": "output"}.get(variant)
        assert removed not in trace
        for gate, value in expected_gates.items():  # step 0 is padded for sequence 1
            np.testing.assert_allclose(trace[gate][[0, 2], 0], value[[0, 2]], atol=1e-5)
        assert np.isnan(trace["h"][1, 0]).all()


def test_gate_statistics_write_only_existing_gates(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    inputs = keras.Input((TIME, FEATURES))
    hidden = klv.GreffLSTM(UNITS, variant="NIG", return_sequences=True, name="nig")(inputs)
    hidden = klv.GreffLSTM(UNITS, variant="NIAF", return_sequences=True, name="niaf")(hidden)
    outputs = keras.layers.Dense(1)(klv.GreffLSTM(UNITS, variant="FGR", name="fgr")(hidden))
    model = keras.Model(inputs, outputs)
    x, _ = data("V")
    callback = klv.GateStatistics(str(tmp_path), x)
    callback.set_model(model)
    callback.write(0)  # what fit() does at the end of an epoch
    callback.on_train_end()
    events = event_accumulator.EventAccumulator(
        str(tmp_path / "gates"), dict.fromkeys(event_accumulator.DEFAULT_SIZE_GUIDANCE, 0)
    )
    events.Reload()
    tags = set(events.Tags()["tensors"])
    means = {tag for tag in tags if tag.endswith("/mean")}
    assert means == {
        f"gates/{layer}/{gate}/mean"
        for layer in ("nig", "niaf", "fgr")
        for gate in model.get_layer(layer).cell.gate_names
    }
    assert "gates/nig/input/mean" not in tags
    for layer, bands in (("nig", 3), ("niaf", 4), ("fgr", 4)):  # one band per existing gate
        [event] = events.Tensors(f"gates/{layer}/heatmap")
        _, height, png = tf.make_ndarray(event.tensor_proto)
        assert png.startswith(b"\x89PNG")
        assert int(height) == klv.gates.pictures.heatmap_size(bands)[0], layer
    assert klv.gates.gate_range(model.get_layer("niaf").cell, "candidate") == (None, None)


@pytest.mark.tensorflow_only("exports a SavedModel")
def test_streaming_export_carries_every_state(tmp_path):
    """A chain through all nine layers streams step by step from random non-zero states,
    FGR's previous gates included, equal to Keras on the whole sequence."""
    generator = rng(5)
    layers = [
        klv.GreffLSTM(UNITS, variant=v, return_sequences=True, name=v.lower()) for v in VARIANTS
    ]
    model = keras.Sequential(
        [keras.Input((None, FEATURES)), *layers, keras.layers.Dense(2, name="head")]
    )
    randomize(model, seed=6)
    x, _ = data("V")
    path = klv.export_saved_model(model, tmp_path / "stream", streaming=True)
    loaded = tf.saved_model.load(str(path))

    names = [f"{layer.name}_{state}" for layer in layers for state in layer.cell.state_names]
    assert "fgr_gates" in names
    zeros = loaded.signatures["initial_state"](batch_size=BATCH)
    assert sorted(zeros) == sorted(names)
    assert zeros["fgr_gates"].shape == (BATCH, 3 * UNITS)

    states, h = {}, x
    for layer in layers:
        initial = [
            generator.uniform(0.05, 0.95, (BATCH, s)).astype("float32")
            for s in layer.cell.state_size
        ]
        states.update(
            zip([f"{layer.name}_{s}" for s in layer.cell.state_names], initial, strict=True)
        )
        h = layer(h, initial_state=initial)
    expected = model.get_layer("head")(h)

    step = loaded.signatures["step"]
    for t in range(TIME):
        result = step(x_t=x[:, t], **states)
        np.testing.assert_allclose(result["output"], expected[:, t], atol=1e-5)
        states = {name: result[name] for name in names}


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("klass", [klv.GreffLSTMCell, klv.GreffLSTM])
def test_bad_input_names_the_argument(klass):
    for variant in ("X", "", None, 1, "vanilla"):
        with pytest.raises(
            ValueError, match=r"`variant`.*V, NIG, NFG, NOG, NIAF, NOAF, NP, CIFG, FGR"
        ):
            klass(3, variant=variant)
    assert klass(3, variant="nig").variant == "NIG"
    with pytest.raises(ValueError, match=r"`peepholes`.*NP: none"):
        klass(3, variant="NP", peepholes=("input",))
    with pytest.raises(ValueError, match="`peepholes`"):
        klass(3, peepholes=("input", "forget", "output"))
    with pytest.raises(ValueError, match=r"`unit_forget_bias`.*NFG"):
        klass(3, variant="NFG", unit_forget_bias=True)
    for name in ("peephole_initializer", "peephole_regularizer", "peephole_constraint"):
        with pytest.raises(ValueError, match=f"`{name}`.*NP"):
            klass(3, variant="NP", **{name: "ones" if "init" in name else "l2"})
    for name in ("gate_recurrent_initializer", "gate_recurrent_regularizer"):
        for variant in set(VARIANTS) - {"FGR"}:
            with pytest.raises(ValueError, match=f"`{name}`.*{variant}"):
                klass(3, variant=variant, **{name: "zeros" if "init" in name else "l2"})


def test_initial_state_of_fgr_has_three_parts():
    layer = klv.GreffLSTM(UNITS, variant="FGR")
    x, states = data("FGR")
    with pytest.raises(ValueError, match="`initial_state`"):
        layer(x, initial_state=states[:2])
    with pytest.raises(ValueError, match=r"`initial_state` gates must have shape \(batch=3, 9\)"):
        layer(x, initial_state=[*states[:2], states[0]])


# ------------------------------------------------------------------- options

#: Each option of issue 9 section 2 (engineer B's, on LSTMCell), and all of them at once. The
#: clipping bounds are small enough to bind with these weights and states.
OPTIONS = {
    "layer_norm": {"layer_norm": True},
    "proj_units": {"proj_units": 2, "proj_clip": 0.1},
    "cell_clip": {"cell_clip": 0.3},
    "zoneout": {"zoneout": (0.3, 0.2)},
    "all": {"layer_norm": True, "proj_units": 2, "cell_clip": 0.5, "zoneout": 0.25},
}


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_option_with_every_variant_matches_reference(variant, option):
    """In inference (zoneout: its expectation), with padding on either side: outputs and
    final states equal the oracle with the option, and differ from it without the option;
    the config round-trips."""
    options = OPTIONS[option]
    x, states = data(variant, output_units=options.get("proj_units"))
    layer = built(make_layer(variant, **options, **SEQUENCES), x)
    weights = randomize(layer)
    mask = padding_mask()
    outputs, *final = to_numpy(layer(x, initial_state=states, mask=mask))
    step = oracle(variant, weights, **options)
    expected, expected_final = reference.run(step, x, states, mask=mask)
    np.testing.assert_allclose(outputs, expected, **TOLERANCE)
    for state, expected_state in zip(final, expected_final, strict=True):
        np.testing.assert_allclose(state, expected_state, **TOLERANCE)

    without = dict(options)
    for key in ("cell_clip", "proj_clip", "zoneout"):
        without.pop(key, None)
    if without != options:  # the option changes the result (it binds)
        step = oracle(variant, weights, **without)
        other, _ = reference.run(step, x, states, mask=mask)
        assert np.abs(outputs - other).max() > 1e-3

    clone = klv.GreffLSTM.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_all_options_train_and_round_trip_keras_file(tmp_path):
    """All options on every variant: a training step (zoneout's per-step masks, dropout)
    gives every weight a gradient; the model saves and loads as ``.keras`` unchanged."""
    model = parallel_model(**OPTIONS["all"], dropout=0.1, seed=3)
    randomize(model, std=0.3)
    x, _ = data("V")

    def loss(x):
        training = model(x, training=True)
        return keras.ops.mean(keras.ops.square(training)), training

    (_, *grads), training = gradients(model, loss, [x], has_aux=True)
    assert all(np.abs(g).max() > 0 for g in grads)
    inference = to_numpy(model(x))
    assert np.isfinite(training).all() and np.abs(training - inference).max() > 1e-3
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(to_numpy(loaded(x)), inference)


@pytest.mark.parametrize(
    "argument, value",
    [
        ("proj_units", 0),
        ("proj_units", 2.5),
        ("cell_clip", -1.0),
        ("zoneout", 1.0),
        ("layer_norm", "yes"),
        ("proj_clip", 1.0),
    ],
)
def test_bad_options_name_the_argument(argument, value):
    for variant in VARIANTS:
        with pytest.raises(ValueError, match=f"`{argument}`"):
            klv.GreffLSTM(3, variant=variant, **{argument: value})

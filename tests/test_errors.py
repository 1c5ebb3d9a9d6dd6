"""Bad input fails loudly, at construction or build, with a message naming the argument."""

import keras
import numpy as np
import pytest

import keras_lstm_variants as klv

CELLS = [cell for cell, _ in klv.VARIANTS.values()]
LAYERS = [layer for _, layer in klv.VARIANTS.values()]
CLASSES = CELLS + LAYERS
STATE_COUNT = {klv.LSTM: 2, klv.PeepholeLSTM: 2, klv.CIFGLSTM: 2, klv.GRU: 1}
STATE_COUNT[klv.GreffLSTM] = 2  # variant "V"; FGR adds the previous gates (test_greff.py)
STATE_COUNT[klv.SLSTM] = STATE_COUNT[klv.MLSTM] = 4  # h and the memory c/C, n, m
STATE_COUNT[klv.MinGRU] = STATE_COUNT[klv.MinLSTM] = 1  # h only


def ids(klass):
    return klass.__name__


def zeros(*shape):
    return np.zeros(shape, dtype="float32")


@pytest.mark.parametrize("units", [0, -3, 2.5, "8", True, None])
@pytest.mark.parametrize("klass", CLASSES, ids=ids)
def test_units_must_be_a_positive_integer(klass, units):
    with pytest.raises(ValueError, match="`units`"):
        klass(units)


def test_units_accepts_numpy_integers():
    assert klv.LSTMCell(np.int64(3)).units == 3


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, "0.5"])
@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("klass", CLASSES, ids=ids)
def test_dropout_must_be_in_unit_interval(klass, argument, rate):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        klass(3, **{argument: rate})


@pytest.mark.parametrize(
    "peepholes",
    [("cell",), ("forget", "forget"), "forget", None, ("input", "output", "input")],
    ids=["unknown", "duplicate", "string", "none", "duplicate-of-three"],
)
@pytest.mark.parametrize(
    "klass",
    [klv.PeepholeLSTMCell, klv.PeepholeLSTM, klv.CIFGLSTMCell, klv.CIFGLSTM],
    ids=ids,
)
def test_bad_peepholes(klass, peepholes):
    with pytest.raises(ValueError, match="`peepholes`"):
        klass(3, peepholes=peepholes)


@pytest.mark.parametrize("klass", [klv.CIFGLSTMCell, klv.CIFGLSTM], ids=ids)
def test_cifg_has_no_input_peephole(klass):
    """CIFG's input gate is 1 - f: an input peephole would be silently meaningless."""
    with pytest.raises(ValueError, match="`peepholes`"):
        klass(3, peepholes=("input",))


@pytest.mark.parametrize("klass", [klv.LSTMCell, klv.LSTM, klv.GRUCell, klv.GRU], ids=ids)
def test_variants_without_peepholes_reject_them(klass):
    with pytest.raises(ValueError, match="peepholes"):
        klass(3, peepholes=("forget",))


@pytest.mark.parametrize("shape", [(3, 4), (3, 6, 4, 1)], ids=["rank-2", "rank-4"])
@pytest.mark.parametrize("symbolic", [False, True], ids=["eager", "symbolic"])
@pytest.mark.parametrize("klass", LAYERS, ids=ids)
def test_sequence_layers_need_rank_3_inputs(klass, symbolic, shape):
    inputs = keras.Input(batch_shape=shape) if symbolic else zeros(*shape)
    with pytest.raises(ValueError, match=r"`inputs` shaped \(batch, time, features\)"):
        klass(3)(inputs)


def test_cell_steps_over_rank_2_inputs():
    cell = klv.LSTMCell(3)
    with pytest.raises(ValueError, match="`inputs` shaped \\(batch, features\\)"):
        cell(zeros(2, 5, 4), [zeros(2, 3), zeros(2, 3)])


@pytest.mark.parametrize("symbolic", [False, True], ids=["eager", "symbolic"])
@pytest.mark.parametrize("klass", LAYERS, ids=ids)
def test_feature_size_may_not_change_after_build(klass, symbolic):
    layer = klass(3)
    layer(zeros(2, 5, 4))
    inputs = keras.Input((5, 6)) if symbolic else zeros(2, 5, 6)
    with pytest.raises(ValueError, match=r"built for inputs with 4 features.*`inputs`"):
        layer(inputs)


def test_feature_size_may_not_change_for_a_cell_in_rnn():
    layer = keras.layers.RNN(klv.PeepholeLSTMCell(3))
    layer(zeros(2, 5, 4))
    with pytest.raises(ValueError, match=r"built for inputs with 4 features.*`inputs`"):
        layer(zeros(2, 5, 6))


BAD_STATES = {
    "too-few": lambda count: [(2, 3)] * (count - 1),
    "too-many": lambda count: [(2, 3)] * (count + 1),
    "wrong-units": lambda count: [(2, 3)] * (count - 1) + [(2, 5)],
    "wrong-batch": lambda count: [(4, 3)] * count,
    "wrong-rank": lambda count: [(2, 3, 1)] * count,
}


@pytest.mark.parametrize("symbolic", [False, True], ids=["eager", "symbolic"])
@pytest.mark.parametrize("bad", BAD_STATES)
@pytest.mark.parametrize("klass", LAYERS, ids=ids)
def test_initial_state_shape_and_count(klass, bad, symbolic):
    shapes = BAD_STATES[bad](STATE_COUNT[klass])
    if symbolic and not shapes:
        pytest.skip("Keras drops an empty initial_state list from symbolic shape inference")
    if symbolic:
        sequences = keras.Input(batch_shape=(2, 5, 4))
        states = [keras.Input(batch_shape=shape) for shape in shapes]
    else:
        sequences, states = zeros(2, 5, 4), [zeros(*shape) for shape in shapes]
    with pytest.raises(ValueError, match="`initial_state`"):
        klass(3)(sequences, initial_state=states)


# -------------------------------------------------------------------- weights and their layout
def peephole_model(peepholes, seed=0):
    model = keras.Sequential([keras.Input((None, 3)), klv.PeepholeLSTM(4, peepholes=peepholes)])
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.5, w.shape) for w in model.get_weights()])
    return model


def save(model, path):
    if path.suffix == ".keras":
        model.save(path)
    else:
        model.save_weights(path)


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_weights_refuse_another_peephole_layout(tmp_path, suffix):
    """A forget peephole vector must not load as the output one (same shape, other meaning)."""
    path = tmp_path / f"m{suffix}"
    saved = peephole_model(("forget",))
    save(saved, path)
    other = peephole_model(("output",), seed=1)
    before = other.get_weights()
    with pytest.raises(
        ValueError, match=r"(?s)saved with peepholes=\['forget'\].*cell's peepholes=\['output'\]"
    ):
        other.load_weights(path)
    for kept, was in zip(other.get_weights(), before, strict=True):
        np.testing.assert_array_equal(kept, was)
    same = peephole_model(("forget",), seed=1)
    same.load_weights(path)
    for loaded, want in zip(same.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(loaded, want)


def test_weights_refuse_another_gru_layout_naming_both(tmp_path):
    path = tmp_path / "gru.weights.h5"
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.RNN(klv.GRUCell(4))])
    model.save_weights(path)
    other = keras.Sequential(
        [keras.Input((None, 3)), keras.layers.RNN(klv.GRUCell(4, reset_after=False))]
    )
    with pytest.raises(ValueError, match=r"(?s)reset_after=True.*reset_after=False"):
        other.load_weights(path)


def test_weights_saved_without_a_layout_record_still_load(tmp_path, monkeypatch):
    """Weights written before the layout was recorded (no record) load as they always did."""
    path = tmp_path / "old.weights.h5"
    with monkeypatch.context() as patch:
        # what older versions wrote: the weights alone
        patch.setattr(klv.RecurrentCell, "save_own_variables", keras.Layer.save_own_variables)
        saved = peephole_model(("forget",))
        saved.save_weights(path)
    import h5py

    with h5py.File(path) as file:
        names = []
        file.visit(names.append)
    assert not any(name.endswith("/layout") for name in names), names
    loaded = peephole_model(("forget",), seed=1)
    loaded.load_weights(path)
    for got, want in zip(loaded.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)

"""Weights never load into a configuration that gives them another meaning.

The record saved beside each cell's weights names the class and every field that changes what
a weight means (Greff variant, peephole set, reset_after, log_space, projection, layer norm,
heads, math-changing activations); loading refuses any difference, naming both sides, whatever
wraps the cell: a sequence layer, ``keras.layers.RNN(cell)``, ``Bidirectional`` or
``StackedRNNCells``. The pairs below have identical weight shapes, so nothing else stops them.
"""

import json

import h5py
import keras
import numpy as np
import pytest

import keras_lstm_variants as klv
from keras_lstm_variants.cells import base

UNITS, FEATURES, TIME, BATCH = 4, 3, 6, 3

#: (saved cell, cell it must not load into): same weight shapes, other meanings.
MISMATCHES = {
    "greff-niaf-into-peephole": (
        lambda **name: klv.GreffLSTMCell(UNITS, "NIAF", **name),
        lambda **name: klv.PeepholeLSTMCell(UNITS, **name),
    ),
    "greff-nig-into-cifg": (
        lambda **name: klv.GreffLSTMCell(UNITS, "NIG", **name),
        lambda **name: klv.CIFGLSTMCell(UNITS, peepholes=("forget", "output"), **name),
    ),
    "gru-reset-before-into-cifg": (
        lambda **name: klv.GRUCell(UNITS, reset_after=False, **name),
        lambda **name: klv.CIFGLSTMCell(UNITS, **name),
    ),
    "mingru-log-space-into-linear": (
        lambda **name: klv.MinGRUCell(UNITS, log_space=True, **name),
        lambda **name: klv.MinGRUCell(UNITS, log_space=False, **name),
    ),
    "lstm-relu-into-tanh": (
        lambda **name: klv.LSTMCell(UNITS, activation="relu", **name),
        lambda **name: klv.LSTMCell(UNITS, **name),
    ),
    "slstm-forget-activation": (
        lambda **name: klv.SLSTMCell(UNITS, 1, forget_activation="exp", **name),
        lambda **name: klv.SLSTMCell(UNITS, 1, **name),
    ),
}


def wrap(kind, make_cell):
    """A model whose recurrent part is ``make_cell()`` wrapped as ``kind``."""
    if kind == "rnn":
        layer = keras.layers.RNN(make_cell(), return_sequences=True)
    elif kind == "bidirectional":
        layer = keras.layers.Bidirectional(keras.layers.RNN(make_cell(), return_sequences=True))
    else:  # stacked: the cell under test second, behind a plain LSTM cell
        # (StackedRNNCells saves its cells under their names: the same name on both sides)
        cells = keras.layers.StackedRNNCells([klv.LSTMCell(UNITS), make_cell(name="second")])
        layer = keras.layers.RNN(cells, return_sequences=True)
    return keras.Sequential([keras.Input((TIME, FEATURES)), layer])


def randomize(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype(w.dtype) for w in model.get_weights()])


def save(model, path):
    if str(path).endswith(".keras"):
        model.save(path)
    else:
        model.save_weights(path)


def saved(kind, make_cell, suffix, tmp_path):
    """A ``kind`` model of ``make_cell``'s cells with random weights, saved as ``suffix``
    in ``tmp_path``: the model and the path."""
    model = wrap(kind, make_cell)
    randomize(model, 0)
    path = tmp_path / f"model{suffix}"
    save(model, path)
    return model, path


def every_way(test):
    """``test`` for every case of :data:`MISMATCHES`, in each kind of model (:func:`wrap`)
    and both file formats."""
    test = pytest.mark.parametrize("case", MISMATCHES)(test)
    test = pytest.mark.parametrize("kind", ["rnn", "bidirectional", "stacked"])(test)
    return pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])(test)


def inputs():
    return np.random.default_rng(7).normal(size=(BATCH, TIME, FEATURES)).astype("float32")


@every_way
def test_weights_of_another_meaning_are_refused(case, kind, suffix, tmp_path):
    make_saved, make_other = MISMATCHES[case]
    model, path = saved(kind, make_saved, suffix, tmp_path)
    other = wrap(kind, make_other)
    assert [w.shape for w in other.get_weights()] == [w.shape for w in model.get_weights()]
    refused = other.layers[0].cell.cells[1] if kind == "stacked" else other
    before = refused.get_weights()  # (Keras loads the cells before it, as it finds them)
    message = r"(?s)saved with .*another meaning than this cell's"
    if kind == "stacked" and type(model.layers[0].cell.cells[1]) is not type(
        other.layers[0].cell.cells[1]
    ):
        # StackedRNNCells stores its cells under their class names: Keras finds no weights.
        message = "could not be loaded"
    with pytest.raises(ValueError, match=message):
        other.load_weights(path)
    for kept, was in zip(refused.get_weights(), before, strict=True):
        np.testing.assert_array_equal(kept, was)


@every_way
def test_weights_of_the_same_configuration_load(case, kind, suffix, tmp_path):
    make_saved, _ = MISMATCHES[case]
    model, path = saved(kind, make_saved, suffix, tmp_path)
    same = wrap(kind, make_saved)
    same.load_weights(path)
    x = inputs()
    np.testing.assert_array_equal(same.predict(x, verbose=0), model.predict(x, verbose=0))


def test_the_message_names_both_sides(tmp_path):
    path = tmp_path / "greff.weights.h5"
    save(wrap("rnn", lambda **name: klv.GreffLSTMCell(UNITS, "NIAF")), path)
    with pytest.raises(ValueError) as error:
        wrap("rnn", lambda: klv.PeepholeLSTMCell(UNITS)).load_weights(path)
    message = str(error.value)
    assert "saved with class='keras_lstm_variants>GreffLSTMCell', variant='NIAF'" in message
    assert "cell's class='keras_lstm_variants>PeepholeLSTMCell', variant='(none)'" in message


@pytest.mark.parametrize(
    "saved_layer, other_layer",
    [
        (
            lambda: klv.GreffLSTM(UNITS, "NIAF", name="rnn"),
            lambda: klv.PeepholeLSTM(UNITS, name="rnn"),
        ),
        (
            lambda: klv.GRU(UNITS, reset_after=False, name="rnn"),
            lambda: klv.CIFGLSTM(UNITS, name="rnn"),
        ),
        (
            lambda: klv.MinGRU(UNITS, log_space=True, name="rnn"),
            lambda: klv.MinGRU(UNITS, log_space=False, name="rnn"),
        ),
        (
            lambda: klv.LSTM(UNITS, proj_units=UNITS, name="rnn"),
            lambda: klv.LSTM(UNITS, name="rnn"),
        ),
    ],
    ids=["greff-niaf-peephole", "gru-cifg", "mingru-log-space", "projection"],
)
@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_sequence_layers_refuse_too(saved_layer, other_layer, suffix, tmp_path):
    def model(layer):
        return keras.Sequential([keras.Input((TIME, FEATURES)), layer])

    saved = model(saved_layer())
    path = tmp_path / f"model{suffix}"
    save(saved, path)
    other = model(other_layer())
    message = "another meaning"
    if type(other.layers[0].cell) is not type(saved.layers[0].cell):
        message = "could not be loaded"  # a sequence layer stores its cell under its name
    with pytest.raises(ValueError, match=message):
        other.load_weights(path)
    same = model(saved_layer())
    same.load_weights(path)
    x = inputs()
    np.testing.assert_array_equal(same.predict(x, verbose=0), saved.predict(x, verbose=0))


def test_a_keras_file_loads_with_its_own_classes(tmp_path):
    model = wrap("bidirectional", lambda: klv.GreffLSTMCell(UNITS, "NIG"))
    randomize(model, 1)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = inputs()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def old_record(cell):
    """The record older versions wrote: the cell's ``layout_keys`` then, without a class."""
    keys = {
        klv.GreffLSTMCell: ("peepholes", "layer_norm", "proj_units", "variant"),
        klv.PeepholeLSTMCell: ("peepholes", "layer_norm", "proj_units"),
        klv.GRUCell: ("reset_after", "layer_norm"),
    }[type(cell)]
    return {key: json.loads(json.dumps(getattr(cell, key))) for key in keys}


def test_records_of_older_versions_compare_on_their_keys(tmp_path, monkeypatch):
    """Files written before the record named the class: compared on the keys both sides have,
    as those versions did (a refusal there still holds; what they could not see loads)."""
    path = tmp_path / "old.weights.h5"
    with monkeypatch.context() as patch:
        patch.setattr(klv.RecurrentCell, "layout", old_record)
        saved = wrap("rnn", lambda: klv.PeepholeLSTMCell(UNITS, ("forget",)))
        randomize(saved, 2)
        saved.save_weights(path)
    with h5py.File(path) as file:
        record = json.loads(bytes(file["layers/rnn/cell/vars/layout"][()]).decode())
    assert "class" not in record
    with pytest.raises(ValueError, match=r"peepholes=\['forget'\].*peepholes=\['output'\]"):
        wrap("rnn", lambda: klv.PeepholeLSTMCell(UNITS, ("output",))).load_weights(path)
    same = wrap("rnn", lambda: klv.PeepholeLSTMCell(UNITS, ("forget",)))
    same.load_weights(path)
    for got, want in zip(same.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_weights_without_a_record_load_as_before(tmp_path, monkeypatch):
    path = tmp_path / "older.weights.h5"
    with monkeypatch.context() as patch:
        patch.setattr(klv.RecurrentCell, "save_own_variables", keras.Layer.save_own_variables)
        saved = wrap("stacked", lambda **name: klv.GRUCell(UNITS, **name))
        randomize(saved, 3)
        saved.save_weights(path)
    loaded = wrap("stacked", lambda **name: klv.GRUCell(UNITS, **name))
    loaded.load_weights(path)
    for got, want in zip(loaded.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_field_on_one_side_only_counts_unless_it_is_the_default():
    current = klv.LSTMCell(UNITS).layout()
    # a field a later version records, at its default: the same meaning
    assert base._differences(klv.LSTMCell, {**current, "cell_clip": None}, current) == []
    assert base._differences(klv.LSTMCell, current, {**current, "cell_clip": None}) == []
    # ... and away from it: another meaning, on either side
    assert base._differences(klv.LSTMCell, {**current, "cell_clip": 3.0}, current) == ["cell_clip"]
    assert base._differences(klv.LSTMCell, current, {**current, "cell_clip": 3.0}) == ["cell_clip"]
    # a field the class does not know at all
    assert base._differences(klv.LSTMCell, {**current, "variant": "NIG"}, current) == ["variant"]
    assert base._differences(klv.LSTMCell, current, current) == []


def test_every_registered_cell_records_its_class_and_fields():
    for record in klv.registry.records():
        layout = record.cell(UNITS).layout()
        assert layout["class"] == keras.saving.get_registered_name(record.cell)
        assert not set(layout) & set(record.cell.refused_arguments)
    assert {"variant", "layer_norm", "proj_units"} <= set(klv.GreffLSTMCell(UNITS).layout())
    assert {"peepholes", "layer_norm", "proj_units"} <= set(klv.CIFGLSTMCell(UNITS).layout())
    assert {"reset_after", "activation"} <= set(klv.GRUCell(UNITS).layout())
    assert {"log_space"} <= set(klv.MinLSTMCell(UNITS).layout())
    assert {"num_heads", "forget_activation"} <= set(klv.MLSTMCell(UNITS).layout())

"""The quickest end-to-end check: every variant trains in a Sequential model."""

import keras
import numpy as np
import pytest

import keras_lstm_variants as klv


@pytest.mark.parametrize("name", sorted(klv.VARIANTS))
def test_variant_trains_in_sequential(name):
    _, layer_class = klv.VARIANTS[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 3)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    model = keras.Sequential([keras.Input((5, 3)), layer_class(6), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    history = model.fit(x, y, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]

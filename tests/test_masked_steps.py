"""A masked step never reaches the result, and rows of a batch are independent.

Every variant configuration (tests/layer_configs.py), through every path its layer takes (the
stepping loop, the parallel mLSTM, the minGRU/minLSTM scan; training, which takes the JAX scan
kernel, too): NaN or inf in the inputs at masked steps gives exactly the outputs, final states
and gradients of zeros there, all finite; a NaN in one row of a batch leaves the other rows'
outputs, states and gradients as they were. (``NaN * 0`` is NaN: a masked step multiplied by
zero, or masked after a product, would poison the row.)
"""

import keras
import numpy as np
import pytest
from helpers import run_with_gradients
from layer_configs import CONFIGS

BATCH, TIME, FEATURES, UNITS = 4, 7, 3, 8


def mask_of_every_kind():
    """Rows padded on the right, on the left, with gaps inside, and not at all."""
    mask = np.ones((BATCH, TIME), bool)
    mask[0, TIME - 3 :] = False
    mask[1, :2] = False
    mask[2, [1, 3, 4]] = False
    return mask


def layer_with_data(config, **kwargs):
    """A factory of equal layers (random weights, one seed: the same zoneout masks in
    training), inputs and non-zero initial states (from a warm-up)."""
    layer_class, arguments = CONFIGS[config]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    warm = rng.normal(size=(BATCH, 4, FEATURES)).astype("float32")
    weights = []

    def make():
        layer = layer_class(
            UNITS, return_sequences=True, return_state=True, seed=3, **arguments, **kwargs
        )
        layer.build(x.shape)
        if not weights:
            weights.extend(rng.normal(0.0, 0.5, w.shape) for w in layer.get_weights())
        layer.set_weights(weights)
        return layer

    states = [keras.ops.convert_to_numpy(s) for s in make()(warm)[1:]]
    return make, x, states


#: Backwards too for one configuration of each path (loop, parallel, scan), forwards for all.
BACKWARDS = ("lstm", "gru", "slstm", "mlstm", "mlstm-stepped", "mingru", "minlstm")
DIRECTIONS = [
    pytest.param(config, backwards, id=f"{config}-{'backwards' if backwards else 'forwards'}")
    for config in CONFIGS
    for backwards in ((False, True) if config in BACKWARDS else (False,))
]


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("poison", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("config, go_backwards", DIRECTIONS)
def test_masked_steps_never_reach_the_result(config, go_backwards, poison, training):
    make, x, states = layer_with_data(config, go_backwards=go_backwards)
    mask = mask_of_every_kind()
    clean = np.where(mask[..., None], x, 0.0).astype("float32")
    poisoned = np.where(mask[..., None], x, poison).astype("float32")
    expected, expected_grads = run_with_gradients(make(), clean, states, mask, training)
    layer = make()
    results, grads = run_with_gradients(layer, poisoned, states, mask, training)
    for name, a, b in zip(("outputs", *layer.cell.state_names), results, expected, strict=True):
        assert np.isfinite(a).all(), f"{config}: {name} not finite"
        np.testing.assert_array_equal(a, b, err_msg=f"{config}: {name}")
    for a, b in zip(grads, expected_grads, strict=True):
        assert np.isfinite(a).all(), f"{config}: a gradient is not finite"
        np.testing.assert_array_equal(a, b, err_msg=f"{config}: gradients")


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("config", CONFIGS)
def test_a_nan_row_never_reaches_another_row(config, masked):
    """NaN in row 0 (every step): rows 1-3 keep their outputs, states and gradients."""
    make, x, states = layer_with_data(config)
    mask = mask_of_every_kind() if masked else None
    poisoned = x.copy()
    poisoned[0] = np.nan
    layer = make()
    expected, expected_grads = run_with_gradients(layer, x, states, mask)
    results, grads = run_with_gradients(layer, poisoned, states, mask)
    for name, a, b in zip(("outputs", *layer.cell.state_names), results, expected, strict=True):
        assert np.isfinite(a[1:]).all(), f"{config}: {name} of another row not finite"
        np.testing.assert_allclose(a[1:], b[1:], rtol=1e-6, atol=1e-6, err_msg=f"{config}: {name}")
    # The gradients with respect to the inputs and initial states of rows 1-3 (the weights'
    # gradients sum over the rows, so they hold row 0's NaN).
    for a, b in zip(grads[: 1 + len(states)], expected_grads, strict=False):
        assert np.isfinite(a[1:]).all(), f"{config}: another row's gradient is not finite"
        np.testing.assert_allclose(a[1:], b[1:], rtol=1e-5, atol=1e-6)

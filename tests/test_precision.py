r"""Every variant under a mixed-precision policy against float32 with the same weights.

``mixed_float16`` and ``mixed_bfloat16`` keep the variables in float32 and compute in the
16-bit dtype; the cells that need it (the xLSTM gate and stabilizer arithmetic, the scans of
minGRU/minLSTM, layer norm's statistics) compute in float32 inside. The result must then be
the float32 result up to what rounding to the 16-bit dtype costs: the inputs, the weights and
every state stored between steps are rounded to the 16-bit dtype, relative error ``u`` each
(``u = 2**-11`` for float16, ``2**-8`` for bfloat16), and a stable recurrence does not amplify
those roundings. The tolerance is ``TOLERANCE_UNITS`` times ``u`` relative to each tensor's
scale (about 1e-2 for float16): measured, every variant stays within 7 u on short sequences
and 3 u at T = 800, except the mLSTM's output (below). Arithmetic left in float16 where
float32 was meant is about 1,000 u (20%) off in the long parallel mLSTM case.

The mLSTM's output :math:`o \odot C q / \max(|n^\top q|, e^{-m})` divides by a sum of terms of
either sign: where they cancel, the relative error of the sum (u times the terms' magnitude)
is amplified by the terms' magnitude over the sum's (the paper follows the cell with a norm).
That output (and the ``h`` state) measured 11-16 u on all three backends, the same in the
stepped and the parallel form, and is allowed ``MLSTM_OUTPUT_UNITS``.

Runs on the backend ``KERAS_BACKEND`` names (TensorFlow, JAX, torch).
"""

import keras
import numpy as np
import pytest
from layer_configs import CONFIGS, uncovered_variants

BATCH, FEATURES, UNITS, SHORT, LONG = 3, 4, 8, 6, 800

#: Unit roundoff of each 16-bit compute dtype.
UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8}
#: Allowed error in units of the roundoff, relative to the tensor's scale: 20 u is 9.8e-3
#: for float16 and 7.8e-2 for bfloat16.
TOLERANCE_UNITS = 20
#: The mLSTM's output, ill-conditioned where n q cancels (see the module docstring).
MLSTM_OUTPUT_UNITS = 40

#: Long sequences: the parallel mLSTM (where float16 arithmetic went wrong), the sLSTM and a scan.
LONG_CASES = [
    ("mlstm", "mixed_float16"),
    ("mlstm", "mixed_bfloat16"),
    ("slstm", "mixed_float16"),
    ("mingru", "mixed_float16"),
]


def has_bfloat16():
    """Whether the backend computes a bfloat16 matrix product here (probed, not assumed)."""
    try:
        x = keras.ops.ones((2, 2), dtype="bfloat16")
        return bool(np.isfinite(keras.ops.convert_to_numpy(keras.ops.matmul(x, x))).all())
    except Exception:  # any failure means the backend lacks it
        return False


def policies():
    return ["mixed_float16", "mixed_bfloat16"] if has_bfloat16() else ["mixed_float16"]


def numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32")), "float64")


def make(config, dtype, **kwargs):
    layer_class, arguments = CONFIGS[config]
    return layer_class(
        UNITS, return_sequences=True, return_state=True, dtype=dtype, **arguments, **kwargs
    )


def pair(config, policy, time, **kwargs):
    """A float32 layer and a ``policy`` layer with the same random weights, built, plus inputs
    (a warm-up prefix gives non-zero initial states) and a mask padded right, left, none."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, time, FEATURES)).astype("float32")
    full, low = make(config, "float32", **kwargs), make(config, policy, **kwargs)
    full.build(x.shape)
    low.build(x.shape)
    full.set_weights([rng.normal(0.0, 0.5, w.shape) for w in full.get_weights()])
    low.set_weights(full.get_weights())
    warm = rng.normal(size=(BATCH, 5, FEATURES)).astype("float32")
    states = [numpy(s).astype("float32") for s in full(warm)[1:]]
    mask = np.ones((BATCH, time), bool)
    mask[0, time - 2 :] = False
    mask[1, :2] = False
    return full, low, x, states, mask


def assert_close(low, full, policy, what):
    """``low`` (the 16-bit result) within ``TOLERANCE_UNITS * u`` of ``full`` relative to
    ``full``'s scale (its largest magnitude, at least 1); ``MLSTM_OUTPUT_UNITS * u`` for the
    mLSTM's output and ``h`` state."""
    mlstm_output = what.startswith("mlstm") and what.endswith(("outputs", " h"))
    units = MLSTM_OUTPUT_UNITS if mlstm_output else TOLERANCE_UNITS
    tol = units * UNIT_ROUNDOFF[policy[len("mixed_") :]]
    low, full = numpy(low), numpy(full)
    assert np.isfinite(full).all(), what
    scale = max(1.0, float(np.abs(full).max()))
    error = np.abs(low - full).max() / scale
    assert error <= tol, f"{what}: error {error:.3g} of scale {scale:.3g} > {tol:.3g}"


def test_every_variant_is_covered():
    """A newly registered variant must be added to tests/layer_configs.py."""
    assert not uncovered_variants()


@pytest.mark.parametrize("policy", policies())
@pytest.mark.parametrize("config", CONFIGS)
def test_mixed_precision_equals_float32(config, policy):
    """Outputs and final states under the policy equal float32's, with non-zero initial
    states and a mask padded on either side."""
    full, low, x, states, mask = pair(config, policy, SHORT)
    assert low.cell.compute_dtype == policy[len("mixed_") :]
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in low.weights)
    expected = full(x, initial_state=states, mask=mask)
    results = low(x, initial_state=states, mask=mask)
    assert keras.backend.standardize_dtype(results[0].dtype) == low.cell.compute_dtype
    names = ("outputs", *(f"state {name}" for name in low.cell.state_names))
    for name, a, b in zip(names, results, expected, strict=True):
        assert_close(a, b, policy, f"{config} {policy} {name}")


@pytest.mark.parametrize("config, policy", LONG_CASES)
def test_long_sequences_under_mixed_precision(config, policy):
    """T = 800: float32 gate arithmetic keeps the long sequence as close as the short one
    (the parallel mLSTM's (time, time) decay matrix and cumulative log forget gates in float16
    are 17-23% off)."""
    if policy == "mixed_bfloat16" and not has_bfloat16():
        pytest.skip(f"no bfloat16 matrix product on {keras.backend.backend()}")
    full, low, x, states, mask = pair(config, policy, LONG)
    expected = full(x, initial_state=states, mask=mask)
    results = low(x, initial_state=states, mask=mask)
    names = ("outputs", *(f"state {name}" for name in low.cell.state_names))
    for name, a, b in zip(names, results, expected, strict=True):
        assert_close(a, b, policy, f"{config} T={LONG} {policy} {name}")


@pytest.mark.parametrize("policy", policies())
@pytest.mark.parametrize("config", CONFIGS)
def test_stateful_under_mixed_precision(config, policy):
    """Two consecutive calls of a stateful layer, the state carried in its (float32) state
    variables: both calls' outputs and the carried states equal float32's."""
    rng = np.random.default_rng(2)
    first, second = (rng.normal(size=(BATCH, 5, FEATURES)).astype("float32") for _ in range(2))
    full = make(config, "float32", stateful=True)
    low = make(config, policy, stateful=True)
    full.build(first.shape)
    low.build(first.shape)
    full.set_weights([rng.normal(0.0, 0.5, w.shape) for w in full.get_weights()])
    low.set_weights(full.get_weights())
    for call, x in enumerate((first, second)):
        expected, results = full(x), low(x)
        names = ("outputs", *(f"state {name}" for name in low.cell.state_names))
        for name, a, b in zip(names, results, expected, strict=True):
            assert_close(a, b, policy, f"{config} {policy} call {call} {name}")
    for name, a, b in zip(low.cell.state_names, low.states, full.states, strict=True):
        assert_close(a, b, policy, f"{config} {policy} carried {name}")

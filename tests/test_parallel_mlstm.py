"""The parallel mLSTM holds no infinite constant, and Keras's ONNX export of it runs.

Steps that do not write (the future, masked steps) are selected out of the decay matrix and
its maximum, never given ``-inf``: ONNX runtimes turn such constants into NaN (ONNX Runtime
ran Keras's own ``model.export(format="onnx")`` of the layer all-NaN). The traced computation
is searched for infinite constants (TensorFlow's graph, JAX's jaxpr), and the ONNX export,
where onnx and onnxruntime are installed, runs in ONNX Runtime equal to the layer.
"""

import keras
import numpy as np
import pytest

import keras_lstm_variants as klv

BATCH, TIME, FEATURES, UNITS, HEADS = 3, 7, 4, 8, 2


def model_and_inputs(masked):
    """A Sequential model over the parallel MLSTM (behind a Masking layer when ``masked``),
    random weights, and inputs whose padded steps are zeros (right, left and none)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    x[0, TIME - 2 :] = 0.0
    x[1, :2] = 0.0
    inner = [keras.layers.Masking(0.0)] if masked else []
    model = keras.Sequential(
        [
            keras.Input((TIME, FEATURES), batch_size=BATCH),
            *inner,
            klv.MLSTM(UNITS, num_heads=HEADS, return_sequences=True),
        ]
    )
    model.set_weights([rng.normal(0.0, 0.5, w.shape) for w in model.get_weights()])
    return model, x


def tensorflow_constants(model, x):
    import tensorflow as tf

    graph = tf.function(model).get_concrete_function(tf.TensorSpec(x.shape, "float32")).graph
    functions = [graph, *(f.graph for f in getattr(graph, "_functions", {}).values())]
    values = []
    for function_graph in functions:
        for op in function_graph.get_operations():
            if op.type == "Const":
                values.append(tf.make_ndarray(op.get_attr("value")))
    return values


def jax_constants(model, x):
    import jax
    from jax.extend.core import Literal

    def call(values, x):
        variables = model.trainable_variables + model.non_trainable_variables
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return model(x)

    variables = model.trainable_variables + model.non_trainable_variables
    closed = jax.make_jaxpr(call)([v.value for v in variables], x)
    values = [np.asarray(c) for c in closed.consts]

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            for var in eqn.invars:
                if isinstance(var, Literal):
                    values.append(np.asarray(var.val))
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else [param]:
                    if hasattr(sub, "jaxpr") and hasattr(sub, "consts"):  # a ClosedJaxpr
                        values.extend(np.asarray(c) for c in sub.consts)
                        visit(sub.jaxpr)
                    elif hasattr(sub, "eqns"):  # a Jaxpr
                        visit(sub)

    visit(closed.jaxpr)
    return values


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_no_infinite_constant(masked):
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        pytest.skip(f"the traced computation is read on TensorFlow and JAX, not {backend}")
    model, x = model_and_inputs(masked)
    find = tensorflow_constants if backend == "tensorflow" else jax_constants
    constants = find(model, x)
    assert constants, "the search found no constant at all: it cannot be reading the trace"
    infinite = [c for c in constants if np.issubdtype(c.dtype, np.floating) and np.isinf(c).any()]
    assert not infinite, f"infinite constants in the traced parallel mLSTM: {infinite}"


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_keras_onnx_export_runs_in_onnxruntime(masked, tmp_path):
    """``model.export(format="onnx")`` of the parallel MLSTM runs in ONNX Runtime, finite and
    equal to the layer (float32 rounding)."""
    pytest.importorskip("onnx")
    runtime = pytest.importorskip("onnxruntime")
    if keras.backend.backend() == "jax":
        pytest.importorskip("jax2onnx", reason="Keras exports JAX models to ONNX with jax2onnx")
    model, x = model_and_inputs(masked)
    expected = keras.ops.convert_to_numpy(model(x))
    path = str(tmp_path / "mlstm.onnx")
    model.export(path, format="onnx", verbose=False)
    session = runtime.InferenceSession(path)
    (outputs,) = session.run(None, {session.get_inputs()[0].name: x})
    assert np.isfinite(outputs).all()
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)

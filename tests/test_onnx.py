"""ONNX export (klv.export_onnx) in ONNX Runtime and OpenVINO, and LiteRT's interpreter.

Every variant, stacked as a sequence layer under a ``Bidirectional`` one (random weights
N(0, 0.5^2), batch 3), is exported once and compared with Keras at two lengths (the time axis
is free) in both runtimes, OpenVINO at float32 precision. Native-operator files are checked to
hold ONNX's ``LSTM``/``GRU`` node and no loop; loop files a ``Scan`` and never a ``Loop``.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_lstm_variants as klv
from keras_lstm_variants import registry

tf = pytest.importorskip("tensorflow", reason="export_onnx traces the model with TensorFlow")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")
pytest.importorskip("tf2onnx")
if keras.backend.backend() != "tensorflow":
    pytest.skip("export traces the model with TensorFlow", allow_module_level=True)

FEATURES, BATCH, UNITS = 3, 3, 4
#: Variants written as ONNX's native operator by default (target="any").
NATIVE = {"lstm": "LSTM", "gru": "GRU"}
#: Native with target="onnxruntime" only: OpenVINO ignores the peepholes and coupled gates.
ORT_ONLY = {"peephole": "LSTM", "cifg": "LSTM"}


def random_weights(model, rng):
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype("float32") for w in model.weights])


def variant_model(name, rng, **options):
    layer = registry.get(name).layer
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            layer(UNITS, return_sequences=True, **options),
            keras.layers.Bidirectional(layer(UNITS, **options)),
            keras.layers.Dense(2),
        ]
    )
    random_weights(model, rng)
    return model


def op_types(path):
    return {node.op_type for node in onnx.load(path).graph.node}


def run_ort(path, x):
    return ort.InferenceSession(path).run(None, {"inputs": x})[0]


def run_openvino(path, x):
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(x)[0]


@pytest.fixture(scope="module", params=list(klv.VARIANTS))
def exported(request, tmp_path_factory):
    name = request.param
    rng = np.random.default_rng(sorted(klv.VARIANTS).index(name))
    model = variant_model(name, rng)
    path = str(tmp_path_factory.mktemp(name) / "model.onnx")
    klv.export_onnx(model, path)
    xs = [rng.normal(0.0, 1.0, (BATCH, t, FEATURES)).astype("float32") for t in (7, 4)]
    return name, model, path, xs


def test_onnx_runtime_equals_keras_at_free_lengths(exported):
    name, model, path, xs = exported
    for x in xs:
        np.testing.assert_allclose(run_ort(path, x), model(x), atol=2e-5)
    ops = op_types(path)
    assert "Loop" not in ops
    if name in NATIVE:
        assert NATIVE[name] in ops and "Scan" not in ops, ops
    else:
        assert "Scan" in ops and not {"LSTM", "GRU"} & ops, ops


def test_openvino_equals_keras_at_free_lengths(exported):
    _, model, path, xs = exported
    for x in xs:
        np.testing.assert_allclose(run_openvino(path, x), model(x), atol=2e-5)


@pytest.mark.parametrize(
    "name, options",
    [
        ("peephole", {}),
        ("peephole", {"peepholes": ("forget",)}),
        ("cifg", {"peepholes": ("forget", "output")}),
        ("cifg", {}),
        ("gru", {"reset_after": False}),
    ],
    ids=["peephole", "peephole-forget", "cifg-peepholes", "cifg", "gru-reset-before"],
)
def test_native_operator_for_onnx_runtime(name, options, tmp_path):
    """Peepholes (any subset, zeros in P for the others) and coupled gates as the LSTM node's
    P and input_forget, GRU's reset_after=False as linear_before_reset=0: ONNX Runtime equals
    Keras; target="any" writes the loop instead (OpenVINO ignores P and input_forget)."""
    rng = np.random.default_rng(5)
    model = variant_model(name, rng, **options)
    x = rng.normal(0.0, 1.0, (BATCH, 6, FEATURES)).astype("float32")
    target = "any" if name == "gru" else "onnxruntime"
    path = klv.export_onnx(model, tmp_path / "m.onnx", native=True, target=target)
    assert {"LSTM", "GRU"} & op_types(path) and "Scan" not in op_types(path)
    np.testing.assert_allclose(run_ort(path, x), model(x), atol=2e-5)
    if name == "gru":
        np.testing.assert_allclose(run_openvino(path, x), model(x), atol=2e-5)
    else:
        with pytest.raises(ValueError, match="OpenVINO ignores ONNX's"):
            klv.export_onnx(model, tmp_path / "n.onnx", native=True)


def test_options_and_directions_as_loops_in_both_runtimes(tmp_path):
    """Options ONNX's operator cannot express become loops; go_backwards and every
    Bidirectional merge mode keep Keras's order of outputs."""
    rng = np.random.default_rng(8)
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            klv.LSTM(4, cell_clip=0.5, proj_units=3, layer_norm=True, return_sequences=True),
            klv.GRU(4, go_backwards=True, return_sequences=True),
            keras.layers.Bidirectional(klv.LSTM(3, return_sequences=True), merge_mode="ave"),
            keras.layers.Bidirectional(klv.GRU(3, zoneout=0.2), merge_mode="mul"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(2, activation="tanh"),
        ]
    )
    random_weights(model, rng)
    x = rng.normal(0.0, 1.0, (BATCH, 6, FEATURES)).astype("float32")
    path = klv.export_onnx(model, tmp_path / "m.onnx")
    assert {"Scan", "LSTM", "GRU"} <= op_types(path)
    np.testing.assert_allclose(run_ort(path, x), model(x), atol=2e-5)
    np.testing.assert_allclose(run_openvino(path, x), model(x), atol=2e-5)


def test_stock_keras_layers_as_native_operators(tmp_path):
    """keras.layers.LSTM and GRU (inside Bidirectional) map onto the operators as ours do."""
    rng = np.random.default_rng(9)
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.LSTM(4, return_sequences=True),
            keras.layers.Bidirectional(keras.layers.GRU(3)),
        ]
    )
    random_weights(model, rng)
    x = rng.normal(0.0, 1.0, (BATCH, 6, FEATURES)).astype("float32")
    path = klv.export_onnx(model, tmp_path / "m.onnx", native=True)
    assert {"LSTM", "GRU"} <= op_types(path) and "Scan" not in op_types(path)
    np.testing.assert_allclose(run_ort(path, x), model(x), atol=2e-5)
    np.testing.assert_allclose(run_openvino(path, x), model(x), atol=2e-5)


@pytest.mark.parametrize(
    "layer, reason",
    [
        (lambda: klv.LSTM(4, cell_clip=1.0), "cell_clip=1.0 is not expressible"),
        (lambda: klv.LSTM(4, layer_norm=True), "layer_norm=True is not expressible"),
        (lambda: klv.GRU(4, zoneout=0.1), "zoneout"),
        (lambda: klv.GRU(4, activation="relu"), "activation='relu' is not tanh"),
        (lambda: klv.MinGRU(4), "MinGRUCell has no ONNX operator"),
        (lambda: klv.PeepholeLSTM(4), "OpenVINO ignores ONNX's peepholes"),
    ],
    ids=["cell_clip", "layer_norm", "zoneout", "activation", "mingru", "peephole-openvino"],
)
def test_native_true_refuses_what_does_not_map(layer, reason, tmp_path):
    model = keras.Sequential([keras.Input((None, FEATURES)), layer()])
    with pytest.raises(ValueError, match=reason):
        klv.export_onnx(model, tmp_path / "m.onnx", native=True)
    assert not os.path.exists(tmp_path / "m.onnx")


def test_bad_arguments_and_missing_packages(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((None, FEATURES)), klv.LSTM(4)])
    for kwargs, match in (
        ({"native": "yes"}, "`native`"),
        ({"target": "openvino"}, "`target`"),
        ({"opset": 13}, "`opset`"),
    ):
        with pytest.raises(ValueError, match=match):
            klv.export_onnx(model, tmp_path / "m.onnx", **kwargs)
    masked = keras.Sequential(
        [keras.Input((None, FEATURES)), keras.layers.Masking(0.0), klv.LSTM(4)]
    )
    with pytest.raises(ValueError, match="behind a mask"):
        klv.export_onnx(masked, tmp_path / "m.onnx", native=True)
    half = keras.Sequential([keras.Input((None, FEATURES)), klv.GRU(3, dtype="mixed_float16")])
    with pytest.raises(ValueError, match="computes in float16"):
        klv.export_onnx(half, tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ImportError, match="pip install onnx tf2onnx"):
        klv.export_onnx(model, tmp_path / "m.onnx")


@pytest.mark.parametrize("return_sequences", [True, False])
def test_masks_padded_anywhere_in_both_runtimes(return_sequences, tmp_path):
    """Embedding(mask_zero=True) and Masking: padding on the right, the left and in the middle;
    masked steps keep the states and repeat the last output, in a loop (the native operator's
    sequence_lens would hold for right-padding only), through Bidirectional too."""
    rng = np.random.default_rng(6)
    ids = rng.integers(1, 11, (BATCH, 7)).astype("int32")
    ids[0, 5:], ids[1, :2], ids[2, 3] = 0, 0, 0
    tokens = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(11, FEATURES, mask_zero=True),
            klv.LSTM(4, return_sequences=True),
            keras.layers.Bidirectional(klv.SLSTM(4, return_sequences=return_sequences)),
            keras.layers.Dense(2),
        ]
    )
    x = rng.normal(0.0, 1.0, (BATCH, 6, FEATURES)).astype("float32")
    x[0, 4:], x[1, :2] = 0.0, 0.0
    features = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Masking(0.0),
            klv.MinGRU(4, return_sequences=True),
            klv.GRU(3, return_sequences=return_sequences),
        ]
    )
    for model, inputs in ((tokens, ids), (features, x)):
        random_weights(model, rng)
        path = klv.export_onnx(model, tmp_path / f"{model.name}.onnx")
        assert not {"LSTM", "GRU"} & op_types(path)
        np.testing.assert_allclose(run_ort(path, inputs), model(inputs), atol=2e-5)
        np.testing.assert_allclose(run_openvino(path, inputs), model(inputs), atol=2e-5)


def test_rows_stay_independent(tmp_path):
    """A NaN in one row leaves the other rows as they were (native and loop)."""
    rng = np.random.default_rng(3)
    model = keras.Sequential(
        [keras.Input((None, FEATURES)), klv.LSTM(4, return_sequences=True), klv.GreffLSTM(4)]
    )
    random_weights(model, rng)
    path = klv.export_onnx(model, tmp_path / "m.onnx")
    x = rng.normal(0.0, 1.0, (BATCH, 5, FEATURES)).astype("float32")
    bad = x.copy()
    bad[1, 2, 0] = np.nan
    for run in (run_ort, run_openvino):
        good, out = run(path, x), run(path, bad)
        np.testing.assert_array_equal(out[[0, 2]], good[[0, 2]])
        # Its own row changes (the runtimes' fused kernels may clamp a NaN into a number).
        assert not np.array_equal(out[1], good[1])


#: Loads each file given on the command line in a Python where keras_lstm_variants, keras and
#: tensorflow cannot be imported, runs it in ONNX Runtime and OpenVINO, compares with its .npz.
SERVE_ELSEWHERE = textwrap.dedent(
    """
    import importlib.machinery
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("keras_lstm_variants", "keras", "tensorflow"):
                return importlib.machinery.ModuleSpec(name, None)

    sys.meta_path.insert(0, Block())
    import numpy as np
    import onnxruntime
    import openvino

    core = openvino.Core()
    for path in sys.argv[1:]:
        data = np.load(path + ".npz")
        got = onnxruntime.InferenceSession(path).run(None, {"inputs": data["x"]})[0]
        np.testing.assert_allclose(got, data["y"], atol=2e-5)
        compiled = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        np.testing.assert_allclose(compiled(data["x"])[0], data["y"], atol=2e-5)
        print("served", path)
    try:
        import keras_lstm_variants  # noqa: F401
    except ImportError:
        print("blocked")
    """
)


def test_served_without_this_package_keras_or_tensorflow(tmp_path):
    rng = np.random.default_rng(4)
    paths = []
    for name in ("lstm", "gru", "greff"):
        model = variant_model(name, rng)
        path = klv.export_onnx(model, str(tmp_path / f"{name}.onnx"))
        x = rng.normal(0.0, 1.0, (BATCH, 5, FEATURES)).astype("float32")
        np.savez(path + ".npz", x=x, y=np.asarray(model(x)))
        paths.append(path)
    result = subprocess.run(
        [sys.executable, "-c", SERVE_ELSEWHERE, *paths],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert sum(line.startswith("served ") for line in lines) == 3 and "blocked" in lines


# ------------------------------------------------------------------------------- LiteRT
litert = pytest.importorskip("ai_edge_litert.interpreter")


def litert_runner(path, key="serving_default"):
    return litert.Interpreter(model_path=str(path)).get_signature_runner(key)


@pytest.mark.parametrize("name", list(klv.VARIANTS))
def test_litert_equals_keras_at_free_lengths_and_streams_from_any_state(name, tmp_path):
    """klv.export_tflite in LiteRT's own interpreter (no Flex ops): two lengths, batch 3, and
    the step signature from random non-zero states against Keras run from the same states."""
    rng = np.random.default_rng(11)
    layer = registry.get(name).layer(UNITS, return_sequences=True, name="rnn")
    model = keras.Sequential([keras.Input((None, FEATURES)), layer, keras.layers.Dense(2)])
    random_weights(model, rng)
    path = klv.export_tflite(model, tmp_path / "m.tflite", batch_size=BATCH, streaming=True)
    run = litert_runner(path)
    for t in (6, 3):
        x = rng.normal(0.0, 1.0, (BATCH, t, FEATURES)).astype("float32")
        np.testing.assert_allclose(run(inputs=x)["output"], model(x), atol=2e-5)
    zeros = layer.cell.get_initial_state(batch_size=BATCH)
    flat = [rng.normal(0.0, 1.0, z.shape).astype("float32") for z in keras.tree.flatten(zeros)]
    states = keras.tree.pack_sequence_as(zeros, flat)
    expected = model.layers[1](layer(x, initial_state=states))
    step = litert_runner(path, "step")
    feed = dict(zip(klv.export.Stream(model).names, flat, strict=True))
    assert set(feed) | {"x_t"} == set(step.get_input_details())
    for t in range(x.shape[1]):
        result = dict(step(x_t=x[:, t], **feed))
        np.testing.assert_allclose(result.pop("output"), expected[:, t], atol=2e-5)
        feed = result


@pytest.mark.parametrize("quantize", ["float16", "dynamic", "int8"])
def test_quantized_tflite_runs_and_stays_near_float(quantize, tmp_path):
    """Post-training quantization: the file runs in LiteRT (serving_default and step), is
    smaller than float for the weight quantizations, and stays near the float model."""
    rng = np.random.default_rng(12)
    model = keras.Sequential(
        [keras.Input((None, FEATURES)), klv.LSTM(16, name="lstm"), keras.layers.Dense(1)]
    )
    data = [rng.normal(0.0, 1.0, (1, 8, FEATURES)).astype("float32") for _ in range(8)]
    options = {"representative_data": data} if quantize == "int8" else {}
    path = klv.export_tflite(
        model, tmp_path / "q.tflite", time_steps=8, streaming=True, quantize=quantize, **options
    )
    plain = klv.export_tflite(model, tmp_path / "f.tflite", time_steps=8, streaming=True)
    x = data[0]
    tolerance = {"float16": 1e-3, "dynamic": 2e-2, "int8": 1e-1}[quantize]
    np.testing.assert_allclose(litert_runner(path)(inputs=x)["output"], model(x), atol=tolerance)
    step = litert_runner(path, "step")
    states = {"lstm_h": np.zeros((1, 16), "float32"), "lstm_c": np.zeros((1, 16), "float32")}
    for t in range(x.shape[1]):
        states = dict(step(x_t=x[:, t], **states))
        output = states.pop("output")
    np.testing.assert_allclose(output, model(x), atol=tolerance)
    if quantize != "int8":  # int8 is unrolled over the 8 steps: larger graph
        assert os.path.getsize(path) < os.path.getsize(plain)


def test_int8_unrolls_the_parallel_mlstm(tmp_path):
    """int8 traces the layers unrolled: mLSTM's parallel form is switched to the recurrent one
    (it has no loop to unroll), minGRU (a scan, no loop) is kept, and the file still equals
    the model within int8's error."""
    keras.utils.set_random_seed(0)  # the layers' initial weights: int8's error depends on them
    rng = np.random.default_rng(14)
    model = keras.Sequential(
        [
            keras.Input((6, FEATURES)),
            klv.MLSTM(8, return_sequences=True),
            klv.MinGRU(4),
            keras.layers.Dense(1),
        ]
    )
    assert model.layers[0].parallel
    data = [rng.normal(0.0, 1.0, (1, 6, FEATURES)).astype("float32") for _ in range(8)]
    path = klv.export_tflite(
        model, tmp_path / "q.tflite", quantize="int8", representative_data=data
    )
    np.testing.assert_allclose(
        litert_runner(path)(inputs=data[0])["output"], model(data[0]), atol=0.1
    )
    assert model.layers[0].parallel and not model.layers[0].unroll  # the model is untouched


def test_quantize_arguments_are_checked(tmp_path):
    model = keras.Sequential([keras.Input((None, FEATURES)), klv.GRU(3)])
    with pytest.raises(ValueError, match="`quantize`"):
        klv.export_tflite(model, tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(ValueError, match="`representative_data`"):
        klv.export_tflite(model, tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(ValueError, match="needs a fixed length"):
        klv.export_tflite(
            model, tmp_path / "m.tflite", quantize="int8", representative_data=[np.zeros((1, 4, 3))]
        )
    assert not os.path.exists(tmp_path / "m.tflite")


# ------------------------------------------------------------------ Keras's own formats
def test_keras_own_litert_and_openvino_exports(tmp_path):
    """Pins Keras's own routes: model.export(format="litert") writes Flex ops (a free batch)
    that LiteRT's interpreter refuses, unless given a fixed batch and builtins only;
    format="openvino" fails on the recurrent loop's tensor lists, while export_onnx's file
    converts with openvino.convert_model (docs/deploy.md)."""
    rng = np.random.default_rng(13)
    model = keras.Sequential([keras.Input((5, FEATURES)), klv.LSTM(4), keras.layers.Dense(2)])
    random_weights(model, rng)
    x = rng.normal(0.0, 1.0, (1, 5, FEATURES)).astype("float32")
    model(x)
    model.export(str(tmp_path / "k.tflite"), format="litert", verbose=False)
    with pytest.raises(RuntimeError, match="Select TensorFlow op"):
        runner = litert_runner(tmp_path / "k.tflite")
        runner(**{next(iter(runner.get_input_details())): x})
    model.export(
        str(tmp_path / "b.tflite"),
        format="litert",
        verbose=False,
        input_signature=[tf.TensorSpec((1, 5, FEATURES), "float32")],
        target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
    )
    runner = litert_runner(tmp_path / "b.tflite")
    result = runner(**{next(iter(runner.get_input_details())): x})
    np.testing.assert_allclose(next(iter(result.values())), model(x), atol=2e-5)
    with pytest.raises(Exception, match="TensorList"):
        model.export(str(tmp_path / "k.xml"), format="openvino", verbose=False)
    converted = ov.convert_model(klv.export_onnx(model, str(tmp_path / "m.onnx")))
    ov.save_model(converted, str(tmp_path / "m.xml"))
    np.testing.assert_allclose(run_openvino(str(tmp_path / "m.xml"), x), model(x), atol=2e-5)

"""Export: SavedModel served without this package, streaming, TFLite, golden models, errors.

One functional model stacks every variant (LSTM, peephole, CIFG, GRU with both reset modes,
the latter two inside ``StackedRNNCells``) and is exported once; the tests check it against
Keras with random weights (N(0, 0.5^2)), non-zero initial states, T >= 5 and batch 3. The
process-isolated checks (a Python that cannot import keras_lstm_variants or keras, which also
serves the golden models in saved_models/; ``saved_model_cli show`` and ``run``) pay seconds
each for importing TensorFlow, so the fixture starts all three in the background at once.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import keras
import numpy as np
import pytest

import keras_lstm_variants as klv
from keras_lstm_variants import kernels

tf = pytest.importorskip("tensorflow", reason="SavedModel and TFLite export need TensorFlow")
if keras.backend.backend() != "tensorflow":
    pytest.skip(
        "export traces the model with TensorFlow: these tests run under KERAS_BACKEND=tensorflow",
        allow_module_level=True,
    )
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "saved_models")
#: The golden models: one per variant, then the token model (examples/make_golden_models.py).
GOLDEN_NAMES = [*klv.VARIANTS, "token"]
FEATURES, BATCH, TIME = 3, 3, 6
#: The stacked model's flat states, in layer order, as the streaming signatures name them.
STATE_NAMES = [
    "lstm_h",
    "lstm_c",
    "peephole_h",
    "peephole_c",
    "stacked_0_h",
    "stacked_0_c",
    "stacked_1_h",
    "gru_h",
]


def random_weights(model, rng):
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype("float32") for w in model.weights])


def stacked_model(rng):
    """A functional chain through every variant, returning sequences to the end."""
    inputs = keras.Input((None, FEATURES))
    x = klv.LSTM(4, return_sequences=True, name="lstm")(inputs)
    x = klv.PeepholeLSTM(3, return_sequences=True, name="peephole")(x)
    cells = [klv.CIFGLSTMCell(4), klv.GRUCell(3, reset_after=False)]
    x = keras.layers.RNN(
        keras.layers.StackedRNNCells(cells), return_sequences=True, name="stacked"
    )(x)
    x = klv.GRU(3, return_sequences=True, name="gru")(x)
    x = keras.layers.LayerNormalization()(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    random_weights(model, rng)
    return model


def random_states(model, rng):
    """Non-zero states for every recurrent layer: {layer name: nested states}, and the same
    states flat, keyed by their streaming names."""
    states = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.RNN):
            zeros = layer.cell.get_initial_state(batch_size=BATCH)
            states[layer.name] = tf.nest.map_structure(
                lambda z: rng.normal(0.0, 1.0, z.shape).astype(z.dtype.as_numpy_dtype), zeros
            )
    flat = [s for name in states for s in tf.nest.flatten(states[name])]
    assert len(flat) == len(STATE_NAMES)
    return states, dict(zip(STATE_NAMES, flat, strict=True))


def assert_streams(step, x, expected, states):
    """Feed ``x`` step by step from ``states``; each output must equal ``expected[:, t]``."""
    for t in range(x.shape[1]):
        states = dict(step(x_t=x[:, t], **states))
        np.testing.assert_allclose(states.pop("output"), expected[:, t], atol=1e-5)
    return states


def keras_from_states(model, x, states):
    """Keras's outputs and final states from ``states``, each recurrent layer run by
    ``keras.layers.RNN`` over its cell (not by the export code)."""
    h, final = x, []
    for layer in model.layers[1:]:
        if layer.name in states:
            rnn = keras.layers.RNN(layer.cell, return_sequences=True, return_state=True)
            h, *layer_final = tf.nest.flatten(rnn(h, initial_state=states[layer.name]))
            final += layer_final
        else:
            h = layer(h)
    return np.asarray(h), [np.asarray(s) for s in final]


def graph_ops(path):
    """Every op type in a SavedModel's graph and functions; the functions' attributes."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as file:
        saved.ParseFromString(file.read())
    graph = saved.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    attrs = set()
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
        attrs |= {name for name, value in function.attr.items() if value.b}
    return ops, attrs


def assert_portable_graph(path):
    ops, attrs = graph_ops(path)
    assert "While" in ops or "StatelessWhile" in ops, sorted(ops)  # the time loop was found
    banned = sorted(op for op in ops if op.startswith(("Cudnn", "Xla", "_Xla")))
    assert not banned, f"cuDNN-only or XLA-only ops in the exported graph: {banned}"
    assert "_XlaMustCompile" not in attrs


#: Runs in a fresh Python where keras_lstm_variants and keras cannot be imported: loads each
#: SavedModel given on the command line and checks serving_default and step against its recorded
#: .npz.
SERVE_ELSEWHERE = textwrap.dedent(
    """
    import importlib.machinery
    import sys

    class Block:
        # Makes keras_lstm_variants and keras look uninstalled: a spec without a loader.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("keras_lstm_variants", "keras"):
                return importlib.machinery.ModuleSpec(name, None)

    sys.meta_path.insert(0, Block())
    import numpy as np
    import tensorflow as tf

    for path in sys.argv[1:]:
        recorded = np.load(path + ".npz")
        x, y = recorded["inputs"], recorded["outputs"]
        loaded = tf.saved_model.load(path)
        served = loaded.signatures["serving_default"](inputs=x)["output"]
        np.testing.assert_allclose(served, y, atol=1e-5)
        states = loaded.signatures["initial_state"](batch_size=x.shape[0])
        for t in range(x.shape[1]):
            states = loaded.signatures["step"](x_t=x[:, t], **states)
            np.testing.assert_allclose(states.pop("output"), y[:, t], atol=1e-5)
        print("served", path)
    assert not any(m.split(".")[0] in ("keras", "keras_lstm_variants") for m in sys.modules)
    try:
        import keras_lstm_variants
    except ImportError:
        print("blocked")
    """
)


#: The saved_model_cli that comes with this Python's TensorFlow (PATH may lack its bin/).
SAVED_MODEL_CLI = (
    shutil.which("saved_model_cli", path=os.path.dirname(sys.executable)) or "saved_model_cli"
)
#: What the saved_model_cli run check feeds.
CLI_INPUTS = np.linspace(-1, 1, 30, dtype=np.float32).reshape(2, 5, 3)


class Job:
    """A command running in the background, from an empty directory ``where`` (so nothing is
    imported from the checkout), its output going to files there."""

    def __init__(self, command, where):
        os.makedirs(where)
        self.where = where
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
        with open(where / "stdout", "w") as out, open(where / "stderr", "w") as err:
            self.process = subprocess.Popen(command, cwd=where, env=env, stdout=out, stderr=err)

    def result(self):
        """``(stdout, stderr)`` once it has exited; fails the test if it failed."""
        code = self.process.wait(timeout=300)
        stdout, stderr = ((self.where / name).read_text() for name in ("stdout", "stderr"))
        assert code == 0, stderr[-3000:]
        return stdout, stderr


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    """The stacked model, an input batch and its streaming SavedModel at ``path``; and the
    process-isolated checks of that SavedModel, started in the background (``jobs``), since
    each spends seconds importing TensorFlow while the in-process tests can run."""
    rng = np.random.default_rng(4)
    model = stacked_model(rng)
    x = rng.normal(0.0, 1.0, (BATCH, TIME, FEATURES)).astype("float32")
    root = tmp_path_factory.mktemp("export")
    path = str(root / "stacked" / "1")
    os.makedirs(os.path.dirname(path))
    assert klv.export_saved_model(model, path, streaming=True) == path
    np.savez(path + ".npz", inputs=x, outputs=model(x).numpy())
    golden = [os.path.join(GOLDEN, name) for name in GOLDEN_NAMES]
    cli = [SAVED_MODEL_CLI, "run", "--dir", path, "--tag_set", "serve", "--signature_def"]
    commands = {
        "serve": [sys.executable, "-c", SERVE_ELSEWHERE, path, *golden],
        "show": [SAVED_MODEL_CLI, "show", "--dir", path, "--all"],
        "run": [
            *cli,
            "serving_default",
            "--input_exprs",
            f"inputs={CLI_INPUTS.tolist()}",
            "--outdir",
            str(root),
        ],
    }
    jobs = {name: Job(command, root / name) for name, command in commands.items()}
    loaded = tf.saved_model.load(path)
    yield SimpleNamespace(model=model, x=x, rng=rng, path=path, loaded=loaded, root=root, jobs=jobs)
    for job in jobs.values():
        job.process.kill()


def test_serving_default_equals_keras_at_any_length(stacked):
    model, x = stacked.model, stacked.x
    serve = stacked.loaded.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["inputs"]
    assert spec.shape.as_list() == [None, None, FEATURES]
    for length in (5, 9):
        xs = np.resize(x, (BATCH, length, FEATURES))
        np.testing.assert_allclose(serve(inputs=xs)["output"], model(xs), atol=1e-5)


def test_step_streams_the_sequence_from_any_state(stacked):
    model, x, rng, loaded = stacked.model, stacked.x, stacked.rng, stacked.loaded
    assert sorted(loaded.signatures["initial_state"](batch_size=BATCH)) == sorted(STATE_NAMES)
    states, flat = random_states(model, rng)
    expected, expected_final = keras_from_states(model, x, states)
    final = assert_streams(loaded.signatures["step"], x, expected, flat)
    for name, want in zip(STATE_NAMES, expected_final, strict=True):
        np.testing.assert_allclose(final[name], want, atol=1e-5)


def test_initial_state_is_zeros_of_the_batch(stacked):
    states = stacked.loaded.signatures["initial_state"](batch_size=5)
    assert {name: tuple(s.shape) for name, s in states.items()}["peephole_c"] == (5, 3)
    assert all(not np.any(s) and s.shape[0] == 5 for s in states.values())


def test_graph_has_no_cudnn_or_xla_ops(stacked):
    assert_portable_graph(stacked.path)


def test_wrong_feature_size_raises(stacked):
    loaded = stacked.loaded
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"inputs.*expected shape \[\?,\?,3\]"):
        loaded.signatures["serving_default"](inputs=tf.zeros((BATCH, TIME, FEATURES + 1)))
    with pytest.raises(TypeError, match="Can not cast"):
        loaded.serving_default(tf.zeros((BATCH, TIME, FEATURES + 3)))
    states = loaded.signatures["initial_state"](batch_size=BATCH)
    with pytest.raises(tf.errors.InvalidArgumentError, match="x_t"):
        loaded.signatures["step"](x_t=tf.zeros((BATCH, FEATURES + 3)), **states)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_equals_keras_at_fixed_length_and_step(stacked, tmp_path):
    model, x, rng = stacked.model, stacked.x, stacked.rng
    path = klv.export_tflite(
        model, tmp_path / "m.tflite", time_steps=TIME, batch_size=BATCH, streaming=True
    )
    interpreter = tf.lite.Interpreter(model_path=str(path))
    serve = interpreter.get_signature_runner("serving_default")
    np.testing.assert_allclose(serve(inputs=x)["output"], model(x), atol=1e-5)

    states, flat = random_states(model, rng)
    expected, _ = keras_from_states(model, x, states)
    step = interpreter.get_signature_runner("step")
    assert_streams(step, x, expected, flat)
    # The interpreter resizes inputs to what it gets; a batch-1 state must not broadcast.
    with pytest.raises(RuntimeError, match="gather index out of bounds"):
        step(x_t=x[:, 0], **{**flat, "gru_h": flat["gru_h"][:1]})
    with pytest.raises(RuntimeError, match="gather index out of bounds"):
        step(x_t=x[:1, 0], **flat)


@pytest.mark.parametrize("how", ["mixed_float16", "jit_compile"])
def test_mixed_precision_and_jit_trained_models_export(how, tmp_path):
    rng = np.random.default_rng(5)
    dtype = "mixed_float16" if how == "mixed_float16" else None
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            klv.CIFGLSTM(4, return_sequences=True, dtype=dtype),
            klv.GRU(3, dtype=dtype),
            keras.layers.Dense(2, dtype="float32"),
        ]
    )
    random_weights(model, rng)
    x = rng.normal(0.0, 1.0, (BATCH, TIME, FEATURES)).astype("float32")
    if how == "jit_compile":
        model.compile("sgd", "mse", jit_compile=True)
        model.fit(x, rng.normal(size=(BATCH, 2)), epochs=1, verbose=0)
    path = klv.export_saved_model(model, tmp_path / "m", streaming=True)
    assert_portable_graph(path)
    loaded = tf.saved_model.load(path)
    tolerance = 1e-2 if dtype else 1e-5
    np.testing.assert_allclose(loaded.serving_default(x)["output"], model(x), atol=tolerance)
    states = loaded.initial_state(BATCH)
    for t in range(TIME):
        result = loaded.step(x[:, t], **states)
        states = {k: v for k, v in result.items() if k != "output"}
    np.testing.assert_allclose(result["output"], model(x), atol=tolerance)


def test_bad_input_raises_naming_the_problem(tmp_path):
    with pytest.raises(ValueError, match="not been built"):
        klv.export_saved_model(keras.Sequential([klv.LSTM(3)]), tmp_path / "m")

    def sequential(*layers):
        return keras.Sequential([keras.Input((None, FEATURES)), *layers])

    model = sequential(klv.GRU(3))
    with pytest.raises(ValueError, match=r"parent directory .*missing.* does not exist"):
        klv.export_saved_model(model, tmp_path / "missing" / "m")
    with pytest.raises(ValueError, match="time_steps"):
        klv.export_tflite(model, tmp_path / "m.tflite", time_steps=0)
    with pytest.raises(ValueError, match="Bidirectional"):
        klv.export_saved_model(
            sequential(keras.layers.Bidirectional(klv.PeepholeLSTM(3))),
            tmp_path / "b",
            streaming=True,
        )
    with pytest.raises(ValueError, match="go_backwards"):
        klv.export_saved_model(
            sequential(klv.LSTM(3, go_backwards=True)), tmp_path / "g", streaming=True
        )
    with pytest.raises(ValueError, match="Conv1D"):
        klv.export_saved_model(
            sequential(keras.layers.Conv1D(2, 3), klv.LSTM(3)), tmp_path / "c", streaming=True
        )
    inputs = keras.Input((None, FEATURES))
    branch = keras.Model(
        inputs, keras.layers.Add()([klv.LSTM(3, return_sequences=True)(inputs), inputs])
    )
    with pytest.raises(ValueError, match="chain of layers"):
        klv.export_saved_model(branch, tmp_path / "r", streaming=True)
    assert not os.listdir(tmp_path)  # nothing half-written


def test_golden_models_are_rebuilt_by_their_script(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_golden_models", os.path.join(ROOT, "examples", "make_golden_models.py")
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert (
        sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(GOLDEN) for f in files)
        < 5 * 2**20
    )
    assert script.names() == GOLDEN_NAMES
    for variant in GOLDEN_NAMES:
        model, inputs = script.build(variant)
        recorded = np.load(os.path.join(GOLDEN, f"{variant}.npz"))
        np.testing.assert_array_equal(inputs, recorded["inputs"])
        np.testing.assert_allclose(model(inputs), recorded["outputs"], atol=1e-5)
    # The script end to end, for one variant: it writes what is committed.
    path = script.write("gru", tmp_path)
    written = np.load(os.path.join(tmp_path, "gru.npz"))
    np.testing.assert_allclose(
        written["outputs"], np.load(os.path.join(GOLDEN, "gru.npz"))["outputs"], atol=1e-6
    )
    served = tf.saved_model.load(path).signatures["serving_default"](inputs=written["inputs"])
    np.testing.assert_allclose(served["output"], written["outputs"], atol=1e-5)


def test_served_without_this_package_or_keras(stacked):
    stdout, _ = stacked.jobs["serve"].result()
    assert stdout.count("served") == 1 + len(GOLDEN_NAMES) and "blocked" in stdout


def test_saved_model_cli_show_and_run(stacked):
    shown, _ = stacked.jobs["show"].result()
    for signature in ("serving_default", "initial_state", "step"):
        assert f"signature_def['{signature}']" in shown
    assert "shape: (-1, -1, 3)" in shown
    stacked.jobs["run"].result()
    output = np.load(stacked.root / "output.npy")
    np.testing.assert_allclose(output, stacked.model(CLI_INPUTS), atol=1e-5)


def test_fused_kernel_saved_model_served_elsewhere(tmp_path, monkeypatch):
    """Opted in (``loop="tf-block"``), a SavedModel of our LSTM and peephole LSTM carries
    TensorFlow's ``BlockLSTMV2`` (beside the cell's loop, chosen at run time) and serves, in a
    fresh process without this package, what the cells' own loop computes in Keras."""
    rng = np.random.default_rng(8)
    inputs = keras.Input((None, FEATURES))
    x = klv.PeepholeLSTM(4, return_sequences=True, name="peephole", loop="tf-block")(inputs)
    model = keras.Model(inputs, klv.LSTM(3, return_sequences=True, name="lstm", loop="tf-block")(x))
    random_weights(model, rng)
    path = str(tmp_path / "fused")
    klv.export_saved_model(model, path, streaming=True)
    ops, _ = graph_ops(path)
    assert {"BlockLSTMV2", "While"} <= ops or {"BlockLSTMV2", "StatelessWhile"} <= ops, ops
    x = rng.normal(0.0, 1.0, (BATCH, TIME, FEATURES)).astype("float32")
    with kernels.forced("keras"):
        np.savez(path + ".npz", inputs=x, outputs=model(x).numpy())
    stdout, _ = Job([sys.executable, "-c", SERVE_ELSEWHERE, path], tmp_path / "serve").result()
    assert stdout.count("served") == 1 and "blocked" in stdout


# ---------------------------------------------------------- issue 12: nothing silently wrong
def test_step_refuses_states_and_x_t_of_different_batch_sizes(stacked):
    """States of batch 1 with an x_t of batch 3 (or one state of another batch) would broadcast
    into a batch-3 answer; every argument must share x_t's batch size."""
    step, initial = stacked.loaded.signatures["step"], stacked.loaded.signatures["initial_state"]
    x_t = tf.constant(stacked.x[:, 0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the batch size of `x_t`"):
        step(x_t=x_t, **initial(batch_size=1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the batch size of `x_t`"):
        step(x_t=x_t[:1], **initial(batch_size=BATCH))
    states = dict(initial(batch_size=BATCH))
    states["gru_h"] = states["gru_h"][:1]
    with pytest.raises(tf.errors.InvalidArgumentError, match="`gru_h` must have the batch size"):
        step(x_t=x_t, **states)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`batch_size` must be >= 0"):
        initial(batch_size=-1)


def random_model_weights(model, rng):
    """N(0, 0.5^2) weights; batch normalization's moving variances positive."""
    weights = []
    for weight in model.weights:
        value = rng.normal(0.0, 0.5, weight.shape)
        if "variance" in weight.path:
            value = np.abs(value) + 0.5
        weights.append(value.astype("float32"))
    model.set_weights(weights)


def assert_step_equals_prefixes(loaded, model, x):
    """Stream ``x`` from zero states: step t's output must equal the model on steps 0..t."""
    states = loaded.signatures["initial_state"](batch_size=x.shape[0])
    for t in range(x.shape[1]):
        states = dict(loaded.signatures["step"](x_t=x[:, t], **states))
        expected = model(x[:, : t + 1])
        expected = expected[:, -1] if len(expected.shape) == 3 else expected
        np.testing.assert_allclose(states.pop("output"), expected, atol=1e-5)


def test_per_step_layers_stream_like_the_model(tmp_path):
    """Normalization, PReLU shared over time, softmax over features and Dense before, between
    and after the recurrent layers stream exactly (BatchNormalization used to fail deep in
    Keras on a 2-D step)."""
    rng = np.random.default_rng(7)
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Dense(4),
            keras.layers.BatchNormalization(),
            klv.LSTM(4, return_sequences=True),
            keras.layers.BatchNormalization(),
            keras.layers.PReLU(shared_axes=[1]),
            keras.layers.Softmax(axis=-1),
            keras.layers.LayerNormalization(),
            keras.layers.Dense(3),
            klv.GRU(3),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )
    random_model_weights(model, rng)
    x = rng.normal(0.0, 1.0, (BATCH, TIME, FEATURES)).astype("float32")
    loaded = tf.saved_model.load(klv.export_saved_model(model, tmp_path / "m", streaming=True))
    np.testing.assert_allclose(loaded.serving_default(x)["output"], model(x), atol=1e-5)
    assert_step_equals_prefixes(loaded, model, x)


@pytest.mark.parametrize(
    "layer, shape, problem",
    [
        (lambda: keras.layers.Softmax(axis=1), (None, FEATURES), "axis=1"),
        (lambda: keras.layers.Softmax(axis=-2), (None, FEATURES), "axis=-2"),
        (lambda: keras.layers.LayerNormalization(axis=[1, 2]), (TIME, FEATURES), r"axis=\[1, 2\]"),
        (lambda: keras.layers.BatchNormalization(axis=1), (TIME, FEATURES), "axis=1"),
        (lambda: keras.layers.PReLU(), (TIME, FEATURES), "one value per time step"),
    ],
    ids=["softmax-time", "softmax-minus-2", "layernorm-time", "batchnorm-time", "prelu-per-step"],
)
def test_layers_that_mix_time_steps_do_not_stream(tmp_path, layer, shape, problem):
    """A layer from PER_STEP_LAYERS acts on each step alone only along the feature axes."""
    model = keras.Sequential(
        [keras.Input(shape), klv.LSTM(4, return_sequences=True), layer(), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match=f"Cannot stream layer .*{problem}"):
        klv.export_saved_model(model, tmp_path / "m", streaming=True)
    klv.export_saved_model(model, tmp_path / "m")  # the whole-sequence export still works


def test_time_distributed_at_a_free_length_is_refused_while_keras_gets_it_wrong(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            klv.LSTM(4, return_sequences=True),
            keras.layers.TimeDistributed(keras.layers.Dense(2)),
        ]
    )
    if klv.export._common._time_distributed_maps_over_time(tf):
        loaded = tf.saved_model.load(klv.export_saved_model(model, tmp_path / "m"))
        x = np.ones((BATCH, TIME, FEATURES), "float32")
        np.testing.assert_allclose(loaded.serving_default(x)["output"], model(x), atol=1e-5)
    else:
        with pytest.raises(ValueError, match=r"'time_distributed' .*free time axis"):
            klv.export_saved_model(model, tmp_path / "m")


def test_softmax_behind_a_mask_does_not_stream(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(9, FEATURES, mask_zero=True),
            klv.LSTM(4, return_sequences=True),
            keras.layers.Softmax(),
        ]
    )
    with pytest.raises(ValueError, match=r"Cannot stream layer '\w+' \(Softmax\).*behind a mask"):
        klv.export_saved_model(model, tmp_path / "m", streaming=True)


def test_a_fixed_time_axis_is_kept(tmp_path):
    """unroll=True needs the time axis the Input fixes; export keeps it instead of freeing it
    (and TimeDistributed, wrong in Keras 3.15 when traced at a free length, is right here)."""
    rng = np.random.default_rng(8)
    model = keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            klv.CIFGLSTM(4, unroll=True, return_sequences=True),
            keras.layers.TimeDistributed(keras.layers.Dense(2)),
        ]
    )
    random_weights(model, rng)
    x = rng.normal(0.0, 1.0, (BATCH, TIME, FEATURES)).astype("float32")
    loaded = tf.saved_model.load(klv.export_saved_model(model, tmp_path / "m", streaming=True))
    spec = loaded.signatures["serving_default"].structured_input_signature[1]["inputs"]
    assert spec.shape.as_list() == [None, TIME, FEATURES]
    np.testing.assert_allclose(loaded.serving_default(x)["output"], model(x), atol=1e-5)
    assert_step_equals_prefixes(loaded, model, x)
    with pytest.raises(ValueError, match=r"`time_steps`=5 contradicts.*fixes that axis at 6"):
        klv.export_tflite(model, tmp_path / "m.tflite", time_steps=5)
    free = keras.Sequential([keras.Input((None, FEATURES)), klv.LSTM(3, unroll=True)])
    with pytest.raises(ValueError, match=r"'lstm.*' with unroll=True at a free length"):
        klv.export_saved_model(free, tmp_path / "free")


def test_paths_and_flags_are_checked_before_any_work(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((None, FEATURES)), klv.GRU(3)])
    a_file = tmp_path / "file"
    a_file.write_text("not a SavedModel")

    def no_work(*args, **kwargs):
        raise AssertionError("the conversion started before the arguments were checked")

    monkeypatch.setattr(klv.export.saved_model, "_archive", no_work)
    monkeypatch.setattr(klv.export.tflite, "_archive", no_work)
    with pytest.raises(ValueError, match=r"`path` names a directory .*exists and is a file"):
        klv.export_saved_model(model, a_file)
    with pytest.raises(ValueError, match=r"`path` names a file .*is a directory"):
        klv.export_tflite(model, tmp_path, time_steps=TIME)
    with pytest.raises(ValueError, match="holds other files and no SavedModel"):
        klv.export_saved_model(model, tmp_path)  # would mix the SavedModel into `file`'s folder
    with pytest.raises(ValueError, match="`path` must not be empty"):
        klv.export_saved_model(model, "")
    with pytest.raises(TypeError, match="`path` must be a path"):
        klv.export_saved_model(model, 3)
    with pytest.raises(ValueError, match="`streaming` must be True or False"):
        klv.export_saved_model(model, tmp_path / "m", streaming="yes")
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer or None"):
        klv.export_tflite(model, tmp_path / "m.tflite", batch_size=0)
    assert a_file.read_text() == "not a SavedModel"
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_stateful_layers_are_refused(tmp_path):
    """A served stateful model would carry one request's state into the next."""
    model = keras.Sequential(
        [keras.Input(batch_shape=(2, None, FEATURES)), klv.LSTM(3, stateful=True)]
    )
    with pytest.raises(ValueError, match="stateful=True"):
        klv.export_saved_model(model, tmp_path / "m")


# ------------------------------------------------------------------------------ token models
def token_model(rng, return_sequences=True):
    """Token ids -> Embedding(mask_zero) -> two recurrent layers -> Dense, random weights."""
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(9, FEATURES, mask_zero=True),
            klv.LSTM(4, return_sequences=True),
            klv.GRU(3, return_sequences=return_sequences),
            keras.layers.Dense(2),
        ]
    )
    random_weights(model, rng)
    return model


def token_ids(rng, length=TIME):
    """Token ids padded (0) on the right, on the left and in the middle, one row each."""
    ids = rng.integers(1, 9, (BATCH, length)).astype("int32")
    ids[0, -2:] = 0
    ids[1, :2] = 0
    ids[2, length // 2] = 0
    return ids


@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
def test_token_model_serves_and_streams_its_own_predictions(tmp_path, return_sequences):
    rng = np.random.default_rng(9)
    model = token_model(rng, return_sequences)
    path = klv.export_saved_model(model, tmp_path / "m", streaming=True)
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["inputs"]
    assert (spec.dtype, spec.shape.as_list()) == (tf.int32, [None, None])
    for length in (TIME, 9):
        ids = token_ids(rng, length)
        np.testing.assert_allclose(serve(inputs=ids)["output"], model(ids), atol=1e-5)
    step_spec = loaded.signatures["step"].structured_input_signature[1]["x_t"]
    assert (step_spec.dtype, step_spec.shape.as_list()) == (tf.int32, [None])
    # Streaming skips padding as the model's mask does: states kept, the last output repeated.
    assert_step_equals_prefixes(loaded, model, token_ids(rng))


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_keeps_a_free_time_axis(tmp_path):
    """Without time_steps, the flatbuffer takes any length (two tested) and streams."""
    rng = np.random.default_rng(10)
    model = token_model(rng)
    path = klv.export_tflite(model, tmp_path / "m.tflite", streaming=True)
    interpreter = tf.lite.Interpreter(model_path=str(path))
    serve = interpreter.get_signature_runner("serving_default")
    for length in (4, 11):
        ids = token_ids(rng, length)[:1]
        np.testing.assert_allclose(serve(inputs=ids)["output"], model(ids), atol=1e-5)
    step = interpreter.get_signature_runner("step")
    ids = token_ids(rng)[1:2]
    states = {
        name: np.zeros(d["shape"], "float32")
        for name, d in step.get_input_details().items()
        if name != "x_t"
    }
    for t in range(ids.shape[1]):
        states = dict(step(x_t=ids[:, t], **states))
        np.testing.assert_allclose(states.pop("output"), model(ids[:, : t + 1])[:, -1], atol=1e-5)


def test_tflite_says_to_pass_time_steps_when_the_converter_needs_it(tmp_path, monkeypatch):
    class Refusing:
        def convert(self):
            raise RuntimeError("dynamic shapes unsupported")

    monkeypatch.setattr(
        tf.lite.TFLiteConverter, "from_saved_model", staticmethod(lambda *a, **k: Refusing())
    )
    model = keras.Sequential([keras.Input((None, FEATURES)), klv.GRU(3)])
    with pytest.raises(ValueError, match="pass `time_steps`"):
        klv.export_tflite(model, tmp_path / "m.tflite")
    assert not os.path.exists(tmp_path / "m.tflite")


def test_a_bad_row_stays_in_its_row_in_fixed_batch_steps(tmp_path):
    """A NaN (or an infinity) in one row of a fixed-batch step (TFLite, a SavedModel whose Input
    fixes the batch) leaves the other rows exactly as without it: the batch guard reads values but
    must not add them to any row."""
    rng = np.random.default_rng(21)
    model = keras.Sequential(
        [
            keras.Input((TIME, FEATURES), batch_size=BATCH),
            klv.LSTM(4, name="lstm"),
            keras.layers.Dense(2),
        ]
    )
    random_weights(model, rng)
    x_t = rng.normal(0.0, 1.0, (BATCH, FEATURES)).astype("float32")
    states = {"lstm_h": np.zeros((BATCH, 4), "float32"), "lstm_c": np.zeros((BATCH, 4), "float32")}
    klv.export_saved_model(model, str(tmp_path / "sm"), streaming=True)
    step = tf.saved_model.load(str(tmp_path / "sm")).signatures["step"]
    klv.export_tflite(model, tmp_path / "m.tflite", batch_size=BATCH, streaming=True)
    runner = tf.lite.Interpreter(str(tmp_path / "m.tflite")).get_signature_runner("step")
    for run in (step, runner):
        good = np.asarray(run(x_t=x_t, **states)["output"])
        for row in range(BATCH):  # the guard reads the last row: each row must stay its own
            for value in (np.nan, np.inf):
                bad = x_t.copy()
                bad[row, 0] = value
                out = np.asarray(run(x_t=bad, **states)["output"])
                others = np.arange(BATCH) != row
                np.testing.assert_array_equal(out[others], good[others])
                assert np.isnan(out[row]).all() == np.isnan(value)  # an infinity saturates

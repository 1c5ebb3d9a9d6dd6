"""Gate inspection: trace_gates against the NumPy oracles, and GateStatistics in TensorBoard."""

import json
import os
import runpy
import socket
import subprocess
import sys
import time
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    BATCH,
    FEATURES,
    TIME,
    UNITS,
    data,
    make_layer,
    padding_mask,
    randomize,
    reference_step,
)
from tensorboard.backend.event_processing import event_accumulator

import keras_lstm_variants as klv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def oracle_trace(step, x, states, mask=None, go_backwards=False):
    """Gates, c and h of every step by the NumPy oracle ``step``, on the original time axis.

    Where ``mask`` is False the state carries over unchanged (Keras's rule) and every traced
    value is NaN. Returns ``(trace, outputs)`` with ``outputs`` the unmasked h of each step.
    """
    x = np.asarray(x, np.float64)
    states = tuple(np.asarray(s, np.float64) for s in states)
    mask = np.ones(x.shape[:2], bool) if mask is None else mask
    steps = {}
    for t in reversed(range(x.shape[1])) if go_backwards else range(x.shape[1]):
        gates, new_states = step(x[:, t], states)
        steps[t] = {**gates, "c": new_states[-1], "h": new_states[0]}
        states = tuple(np.where(mask[:, t, None], n, s) for n, s in zip(new_states, states))
    trace = {key: np.stack([steps[t][key] for t in sorted(steps)], 1) for key in steps[0]}
    outputs = trace["h"].copy()
    for values in trace.values():
        values[~mask] = np.nan
    return trace, outputs


def assert_trace_equal(actual, expected, atol=1e-5):
    assert list(actual) == list(expected), "gate names and order, then c, h"
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], atol=atol, err_msg=key)


def layer_weights(layer):
    return [w.astype(np.float64) for w in layer.get_weights()]


# ----------------------------------------------------------------------------- trace_gates
@pytest.mark.parametrize("case", ["lstm", "peephole-all", "cifg-of", "gru-reset-after",
                                  "gru-reset-before"])
def test_trace_matches_oracle_with_initial_state_and_mask(case):
    layer = make_layer(case, return_sequences=True)
    x, states = data(case)
    inputs = keras.Input((TIME, FEATURES))
    state_inputs = [keras.Input((UNITS,)) for _ in states]
    model = keras.Model([inputs, *state_inputs], layer(inputs, initial_state=state_inputs))
    weights = randomize(layer)
    mask = padding_mask()

    traces = klv.trace_gates(model, [x, *states], mask=mask)

    expected, _ = oracle_trace(reference_step(case, weights), x, states, mask)
    assert list(traces) == [layer.name]
    assert_trace_equal(traces[layer.name], expected)
    assert np.isnan(traces[layer.name]["h"][~mask]).all()
    assert not np.isnan(traces[layer.name]["h"][mask]).any()


def test_bidirectional_halves_are_traced_on_the_original_time_axis():
    inputs = keras.Input((TIME, FEATURES))
    bidirectional = keras.layers.Bidirectional(
        make_layer("peephole-all", return_sequences=True), name="bi"
    )
    model = keras.Model(inputs, keras.layers.Dense(1)(bidirectional(inputs)))
    randomize(bidirectional)
    x, _ = data("peephole-all")
    mask = padding_mask()

    traces = klv.trace_gates(model, x, mask=mask)

    assert list(traces) == ["bi/forward", "bi/backward"]
    zeros = [np.zeros((BATCH, UNITS))] * 2
    for half, backwards in (("forward", False), ("backward", True)):
        sub = getattr(bidirectional, f"{half}_layer")
        step = reference_step("peephole-all", layer_weights(sub))
        expected, _ = oracle_trace(step, x, zeros, mask, go_backwards=backwards)
        assert_trace_equal(traces[f"bi/{half}"], expected)


def test_stacked_cells_each_traced_in_a_nested_model_loaded_from_keras_file(tmp_path):
    cells = [klv.CIFGLSTMCell(UNITS, peepholes=("output", "forget")),
             klv.GRUCell(UNITS, reset_after=False)]
    inner = keras.Sequential(
        [keras.Input((TIME, FEATURES)), keras.layers.RNN(keras.layers.StackedRNNCells(cells),
                                                         name="stack")],
        name="inner",
    )
    inputs = keras.Input((TIME, FEATURES))
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    randomize(inner)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    x, _ = data("lstm")
    mask = padding_mask()

    traces = klv.trace_gates(loaded, x, mask=mask)

    assert list(traces) == ["inner/stack/cell_0", "inner/stack/cell_1"]
    zeros = np.zeros((BATCH, UNITS))
    step_0 = reference_step("cifg-of", layer_weights(cells[0]))
    step_1 = reference_step("gru-reset-before", layer_weights(cells[1]))
    expected_0, outputs_0 = oracle_trace(step_0, x, [zeros, zeros], mask)
    expected_1, _ = oracle_trace(step_1, outputs_0, [zeros], mask)
    assert_trace_equal(traces["inner/stack/cell_0"], expected_0)
    assert_trace_equal(traces["inner/stack/cell_1"], expected_1)
    gru = traces["inner/stack/cell_1"]
    np.testing.assert_array_equal(gru["c"], gru["h"])


def test_stateful_layer_starts_from_its_state_and_keeps_it():
    layer = make_layer("lstm", stateful=True, return_sequences=True)
    model = keras.Sequential([keras.Input((TIME, FEATURES), batch_size=BATCH), layer])
    weights = randomize(layer)
    x, states = data("lstm")
    for variable, value in zip(layer.states, states):
        variable.assign(value)

    traces = klv.trace_gates(model, x)

    expected, _ = oracle_trace(reference_step("lstm", weights), x, states)
    assert_trace_equal(traces[layer.name], expected)
    for variable, value in zip(layer.states, states):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert "inner_loop" not in vars(layer), "the recording hook is removed"


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__()
        normal = keras.initializers.RandomNormal(stddev=0.5, seed=3)
        self.gru = klv.GRU(UNITS, return_sequences=True, name="gru", kernel_initializer=normal,
                           recurrent_initializer=normal, bias_initializer=normal, **kwargs)

    def call(self, x):
        return self.gru(x)


@pytest.mark.parametrize("dtype, atol", [("float32", 1e-5), ("mixed_float16", 1e-2)])
def test_unbuilt_subclassed_model_in_float32_and_mixed_precision(dtype, atol):
    model = Subclassed(dtype=dtype)  # built by trace_gates's own call
    x, _ = data("gru-reset-after")
    mask = padding_mask()

    traces = klv.trace_gates(model, x, mask=mask)

    step = reference_step("gru-reset-after", layer_weights(model.gru))
    expected, _ = oracle_trace(step, x, [np.zeros((BATCH, UNITS))], mask)
    assert traces["gru"]["h"].dtype == np.float32
    assert_trace_equal(traces["gru"], expected, atol=atol)


def test_keras_masking_is_honoured_and_shared_layer_calls_are_separate():
    x, _ = data("gru-reset-after")
    x[0, -2:] = 0.0  # padded by Masking below
    layer = make_layer("gru-reset-after", return_sequences=True)
    first, second = keras.Input((TIME, FEATURES)), keras.Input((TIME, FEATURES))
    outputs = [layer(keras.layers.Masking()(first)), layer(second)]
    model = keras.Model([first, second], keras.layers.Concatenate()(outputs))
    weights = randomize(layer)

    traces = klv.trace_gates(model, [x, x[::-1]])

    path = layer.name
    assert list(traces) == [f"{path}/call_0", f"{path}/call_1"]
    zeros = [np.zeros((BATCH, UNITS))]
    step = reference_step("gru-reset-after", weights)
    keras_mask = np.any(x != 0.0, axis=-1)
    assert_trace_equal(traces[f"{path}/call_0"], oracle_trace(step, x, zeros, keras_mask)[0])
    assert_trace_equal(traces[f"{path}/call_1"], oracle_trace(step, x[::-1], zeros)[0])


def test_bad_input_to_trace_gates_names_the_argument():
    dense = keras.Sequential([keras.Input((TIME, FEATURES)), keras.layers.LSTM(2)])
    with pytest.raises(ValueError, match="`model` contains no variant layer"):
        klv.trace_gates(dense, np.zeros((2, TIME, FEATURES)))
    model = keras.Sequential([keras.Input((TIME, FEATURES)), klv.LSTM(2)])
    with pytest.raises(ValueError, match=r"`x` must have shape \(None, 6, 4\)"):
        klv.trace_gates(model, np.zeros((2, TIME, FEATURES + 1)))
    with pytest.raises(ValueError, match="`mask` must have shape"):
        klv.trace_gates(model, np.zeros((2, TIME, FEATURES)), mask=np.ones((3, TIME)))
    with pytest.raises(ValueError, match="`mask` has 5 time steps"):
        klv.trace_gates(model, np.zeros((2, TIME, FEATURES)), mask=np.ones((2, TIME - 1)))


# -------------------------------------------------------------------------- images (numpy)
def test_saturation_plot_puts_each_unit_at_its_fractions():
    image = klv.gates.saturation_plot(np.array([0.0, 1.0, 0.25]), np.array([1.0, 0.0, 0.5]),
                                      size=101, dot=0)
    blue = (image == klv.gates.DOT_COLOR).all(-1)
    assert sorted(zip(*np.nonzero(blue))) == [(2, 2), (50, 26), (98, 98)]  # 2 px margin
    assert (image[0, 1:-1] == 0).all() and (image[1:-1, -1] == 0).all(), "black border"
    assert (image[30, 30] == 200).all() and (image[30, 70] == 255).all(), "grey x + y = 1"


def test_heatmap_bands_colours_and_masked_steps():
    trace = {"forget": np.array([[[0.0, 1.0], [1.0, np.nan]]]),  # (batch 1, time 2, units 2)
             "candidate": np.array([[[-1.0, 1.0], [1.0, np.nan]]]), "c": None, "h": None}
    image = klv.gates.heatmap(trace, width=2, band=2)
    assert image.shape == (2 + 2 + 2, 2, 3)  # two bands of 2 unit rows, a 2-row separator
    cmap, grey = klv.gates.COLORMAP, klv.gates.MASKED_COLOR
    np.testing.assert_array_equal(image[0], [cmap[0], cmap[-1]])  # unit 0 of forget over time
    np.testing.assert_array_equal(image[1], [cmap[-1], grey])
    np.testing.assert_array_equal(image[4], [cmap[0], cmap[-1]])  # candidate spans -1 .. 1
    assert (image[2:4] == 255).all()


# ----------------------------------------------------------------- GateStatistics / events
@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A model trained 2 epochs with GateStatistics(every_n_epochs=2): one logged step."""
    log_dir = str(tmp_path_factory.mktemp("logs"))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((TIME, FEATURES))
    hidden = keras.layers.Bidirectional(klv.CIFGLSTM(UNITS, return_sequences=True), name="bi")(
        inputs
    )
    outputs = keras.layers.Dense(1)(klv.GRU(UNITS, name="gru")(hidden))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse", run_eagerly=True)
    x, _ = data("lstm", batch=8)
    probe, mask = x[:BATCH], padding_mask()
    callback = klv.GateStatistics(log_dir, probe, every_n_epochs=2, mask=mask, probe_index=1)
    model.fit(x, x[:, -1, :1], epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    everything = {kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}
    events = event_accumulator.EventAccumulator(os.path.join(log_dir, "gates"), everything)
    events.Reload()
    return log_dir, events, klv.trace_gates(model, probe, mask=mask)


def scalar_values(events):
    """{tag: [(step, value)]} of every scalar, read back from the event files."""
    return {
        tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
        for tag in events.Tags()["tensors"]
        if events.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    }


def test_logged_scalars_equal_statistics_of_trace_gates(logged):
    _, events, traces = logged
    scalars = scalar_values(events)
    assert set(traces) == {"bi/forward", "bi/backward", "gru"}
    expected_tags = set()
    for layer, trace in traces.items():
        for gate in (key for key in trace if key not in ("c", "h")):
            values = trace[gate][~np.isnan(trace[gate])]
            low, high = (-0.9, 0.9) if gate == "candidate" else (0.1, 0.9)
            statistics = {"mean": values.mean(), "left_saturated": np.mean(values < low),
                          "right_saturated": np.mean(values > high)}
            for name, value in statistics.items():
                tag = f"gates/{layer}/{gate}/{name}"
                expected_tags.add(tag)
                [(step, logged_value)] = scalars[tag]
                assert step == 1, "every_n_epochs=2 logs after the second epoch only"
                np.testing.assert_allclose(logged_value, value, atol=1e-6, err_msg=tag)
    assert set(scalars) == expected_tags
    assert {"gates/bi/forward/input/mean", "gates/gru/update/right_saturated"} <= expected_tags


def test_logged_histograms_and_images(logged):
    _, events, traces = logged
    tags = events.Tags()["tensors"]
    kinds = {tag: events.SummaryMetadata(tag).plugin_data.plugin_name for tag in tags}
    for layer, trace in traces.items():
        for key in trace:
            assert kinds[f"gates/{layer}/{key}"] == "histograms"
            if key not in ("c", "h"):
                assert kinds[f"gates/{layer}/{key}/saturation"] == "images"
        assert kinds[f"gates/{layer}/heatmap"] == "images"
    [heat] = events.Tensors("gates/bi/backward/heatmap")
    width, height, png = tf.make_ndarray(heat.tensor_proto)
    decoded = tf.io.decode_png(png).numpy()
    assert decoded.shape == (int(height), int(width), 3)
    expected = klv.gates.heatmap(traces["bi/backward"], sequence=1)
    np.testing.assert_array_equal(decoded, expected)
    [histogram] = events.Tensors("gates/gru/c")
    counts = tf.make_ndarray(histogram.tensor_proto)[:, 2]
    assert counts.sum() == np.count_nonzero(~np.isnan(traces["gru"]["c"]))


TENSORBOARD_WITHOUT_TF = (
    "import sys, types; sys.modules['tensorboard.compat.notf'] = types.ModuleType('notf'); "
    "from tensorboard.main import run_main; sys.exit(run_main())"
)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tensorboard_server_shows_the_tags(logged):
    log_dir = logged[0]
    port = free_port()
    # `tensorboard --logdir ...` in TensorBoard's own TensorFlow-free mode (tensorboard.compat
    # looks for a module `tensorboard.compat.notf`): the same server and event-file reader,
    # without the import of TensorFlow that takes 20-50 s on a loaded 2-core machine.
    server = subprocess.Popen(
        [sys.executable, "-c", TENSORBOARD_WITHOUT_TF, "--logdir", log_dir, "--port", str(port),
         "--host", "127.0.0.1", "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def get(plugin):
        url = f"http://127.0.0.1:{port}/data/plugin/{plugin}/tags"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response).get("gates", {})

    try:
        deadline, tags = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            try:
                tags = {plugin: get(plugin) for plugin in ("scalars", "histograms", "images")}
                if all(tags.values()):
                    break
            except OSError:
                pass
            assert server.poll() is None, "tensorboard exited"
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "gates/bi/backward/forget/right_saturated" in tags["scalars"]
    assert "gates/gru/h" in tags["histograms"]
    assert {"gates/gru/heatmap", "gates/bi/forward/output/saturation"} <= set(tags["images"])
    assert "Karpathy" in tags["images"]["gates/gru/reset/saturation"]["description"]


def test_bad_input_to_gate_statistics_names_the_argument(tmp_path):
    probe = np.zeros((2, TIME, FEATURES), "float32")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="`log_dir` is not writable"):
        klv.GateStatistics(str(blocker / "logs"), probe)
    with pytest.raises(ValueError, match="`every_n_epochs`"):
        klv.GateStatistics(str(tmp_path), probe, every_n_epochs=0)
    with pytest.raises(ValueError, match="`probe_index`"):
        klv.GateStatistics(str(tmp_path), probe, probe_index=2)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        klv.GateStatistics(str(tmp_path), probe, mask=np.ones((3, TIME)))
    callback = klv.GateStatistics(str(tmp_path), probe)
    with pytest.raises(ValueError, match="`model` contains no variant layer"):
        callback.set_model(keras.Sequential([keras.Input((TIME, FEATURES)), keras.layers.GRU(2)]))
    with pytest.raises(ValueError, match=r"`data` must have shape \(None, 6, 3\)"):
        callback.set_model(keras.Sequential([keras.Input((TIME, 3)), klv.GRU(2)]))


def test_example_quick_mode_trains_and_prints_the_tensorboard_command(
    tmp_path, monkeypatch, capsys
):
    # In this process (TensorFlow is already imported): python examples/gate_inspection.py
    monkeypatch.syspath_prepend(os.path.join(ROOT, "examples"))
    example = runpy.run_path(os.path.join(ROOT, "examples", "gate_inspection.py"))
    arguments = ["--quick", "--variants", "cifg", "--log-dir", str(tmp_path)]
    assert example["main"](arguments) == 0
    printed = capsys.readouterr().out
    assert f"tensorboard --logdir {tmp_path}" in printed
    [row] = [line for line in printed.splitlines() if line.startswith("| cifg |")]
    accuracy, gate, mean, right, left = [cell.strip() for cell in row.split("|")[2:7]]
    assert gate == "forget" and 0 <= float(accuracy) <= 1
    assert 0 < float(mean) < 1 and 0 <= float(right) + float(left) <= 1
    assert any(name.startswith("events.out") for name in os.listdir(tmp_path / "cifg" / "gates"))
    assert os.listdir(tmp_path / "cifg" / "train"), "keras.callbacks.TensorBoard wrote beside it"

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
        gates, new_states = step(x[:, t], states)  # states (h,) or (h, c): no c for a GRU
        named = dict(zip(("h", "c"), new_states, strict=False))
        steps[t] = {**gates, **{key: named[key] for key in ("c", "h") if key in named}}
        keep = mask[:, t, None]
        states = tuple(np.where(keep, n, s) for n, s in zip(new_states, states, strict=True))
    trace = {key: np.stack([steps[t][key] for t in sorted(steps)], 1) for key in steps[0]}
    outputs = trace["h"].copy()
    for values in trace.values():
        values[~mask] = np.nan
    return trace, outputs


def assert_trace_equal(actual, expected, atol=1e-5):
    assert list(actual) == list(expected), "gate names and order, then c (if any), h"
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], atol=atol, err_msg=key)


def layer_weights(layer):
    return [w.astype(np.float64) for w in layer.get_weights()]


# ----------------------------------------------------------------------------- trace_gates
@pytest.mark.parametrize(
    "case", ["lstm", "peephole-all", "cifg-of", "gru-reset-after", "gru-reset-before"]
)
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
    cells = [
        klv.CIFGLSTMCell(UNITS, peepholes=("output", "forget")),
        klv.GRUCell(UNITS, reset_after=False),
    ]
    inner = keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            keras.layers.RNN(keras.layers.StackedRNNCells(cells), name="stack"),
        ],
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
    assert list(traces["inner/stack/cell_1"]) == ["update", "reset", "candidate", "h"]


def test_stateful_layer_starts_from_its_state_and_keeps_it():
    layer = make_layer("lstm", stateful=True, return_sequences=True)
    model = keras.Sequential([keras.Input((TIME, FEATURES), batch_size=BATCH), layer])
    weights = randomize(layer)
    x, states = data("lstm")
    for variable, value in zip(layer.states, states, strict=True):
        variable.assign(value)

    traces = klv.trace_gates(model, x)

    expected, _ = oracle_trace(reference_step("lstm", weights), x, states)
    assert_trace_equal(traces[layer.name], expected)
    for variable, value in zip(layer.states, states, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert "inner_loop" not in vars(layer), "the recording hook is removed"


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__()
        normal = keras.initializers.RandomNormal(stddev=0.5, seed=3)
        self.gru = klv.GRU(
            UNITS,
            return_sequences=True,
            name="gru",
            kernel_initializer=normal,
            recurrent_initializer=normal,
            bias_initializer=normal,
            **kwargs,
        )

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


def test_symbolic_passes_are_recognised_by_the_private_keras_function_tracing_uses():
    """Tracing skips Keras's placeholder passes through ``_compat.in_symbolic_scope``."""
    from keras_lstm_variants import _compat

    assert not _compat.in_symbolic_scope()
    with keras.SymbolicScope():
        assert _compat.in_symbolic_scope()


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


# --------------------------------------------------------------------------------- pictures
def lstm_trace(batch=BATCH, time=TIME, mask=None):
    """A LayerTrace of a randomized LSTM on random data (and its gate ranges)."""
    layer = make_layer("lstm", return_sequences=True)
    model = keras.Sequential([keras.Input((time, FEATURES)), layer])
    randomize(layer, std=1.0)
    x, _ = data("lstm", batch=batch, time=time)
    trace = klv.gates.trace_layers(model, x, mask=mask)[layer.name]
    return trace, {gate: klv.gates.gate_range(trace.cell, gate) for gate in trace.gate_names}


def test_heatmap_figure_has_a_named_panel_per_gate_time_axis_and_colour_bars():
    mask = padding_mask()
    trace, ranges = lstm_trace(mask=mask)
    gates = {gate: trace[gate] for gate in trace.gate_names}
    figure = klv.gates.heatmap_figure(gates, ranges, sequence=1, title="encoder")

    panels = [ax for ax in figure.axes if ax.get_images()]
    bars = [ax for ax in figure.axes if not ax.get_images()]
    assert [ax.get_title(loc="left") for ax in panels] == ["input", "forget", "candidate", "output"]
    assert len(bars) == 4, "one colour bar per panel"
    for ax, gate in zip(panels, gates, strict=True):
        [image] = ax.get_images()
        assert image.get_clim() == ranges[gate], "colours span the gate's range"
        np.testing.assert_array_equal(image.get_array().filled(np.nan).T, gates[gate][1])
        assert ax.get_ylabel() == "unit"
        assert image.colorbar is not None and image.colorbar.ax in bars
        [hatched] = [patch for patch in ax.patches if patch.get_hatch()]
        x_extent = hatched.get_path().transformed(hatched.get_patch_transform()).vertices[:, 0]
        assert (x_extent.min(), x_extent.max()) == (-0.5, 1.5), "sequence 1: 2 steps padded"
    assert ranges["candidate"] == (-1.0, 1.0) and ranges["forget"] == (0.0, 1.0)
    assert panels[-1].get_xlabel() == "time step"
    assert all(float(t).is_integer() for t in panels[-1].get_xticks()), "whole time steps"
    assert "encoder" in figure.get_suptitle() and "2 masked" in figure.get_suptitle()
    height, width = klv.gates.pictures.heatmap_size(4)
    assert (height, width) == (388, 360)
    assert klv.gates.pictures.render(figure).shape == (height, width, 3)


def test_saturation_figure_axes_diagonal_counts_and_nothing_clipped():
    left = np.array([0.0, 0.0, 0.0, 0.5, np.nan])
    right = np.array([0.0, 0.0, 0.0, 0.25, np.nan])
    figure = klv.gates.saturation_figure(
        left, right, "forget", (0.1, 0.9), title="rnn", corners=("erases memory", "keeps memory")
    )
    [ax] = figure.axes
    assert ax.get_xlabel() == "fraction of steps < 0.1"
    assert ax.get_ylabel() == "fraction of steps > 0.9"
    assert ax.get_title() == "rnn: forget (n = 4 units)", "the NaN unit is not counted"
    [diagonal] = ax.get_lines()
    np.testing.assert_array_equal(diagonal.get_xydata(), [[0, 1], [1, 0]])
    [dots] = ax.collections
    np.testing.assert_array_equal(dots.get_offsets(), [[0.0, 0.0], [0.5, 0.25]])
    assert dots.get_sizes()[0] > dots.get_sizes()[1], "three units at the origin: a larger dot"
    assert 0 < dots.get_alpha() < 1 and not dots.get_clip_on()
    assert ax.get_xlim()[0] < 0 < 1 < ax.get_xlim()[1], "dots on 0 and 1 clear the frame"
    assert ax.get_ylim()[0] < 0 < 1 < ax.get_ylim()[1]
    texts = [text.get_text() for text in ax.texts]
    assert "3" in texts and {"erases memory", "keeps memory"} <= set(texts)
    size = klv.gates.pictures.SCATTER_SIZE
    assert klv.gates.pictures.render(figure).shape == (size, size, 3)


def test_a_reused_figure_draws_what_a_new_one_draws():
    render, pictures = klv.gates.pictures.render, klv.gates.pictures
    first, ranges = lstm_trace(mask=padding_mask())
    second, _ = lstm_trace()  # other values, no masked steps
    second = {gate: second[gate] * 0.5 for gate in first.gate_names}
    first = {gate: first[gate] for gate in first.gate_names}
    figures = {}
    for trace, sequence in ((first, 1), (second, 1), (first, 0)):
        reused = pictures.heatmap_image(trace, ranges, sequence, "rnn", figures=figures)
        np.testing.assert_array_equal(
            reused, render(klv.gates.heatmap_figure(trace, ranges, sequence, "rnn"))
        )
    kept = figures["heatmap"]
    for left, right in (
        ([0.0, 0.0, 0.5], [0.0, 0.0, 0.2]),
        ([0.1, 0.9, np.nan], [0.8, 0, 0]),
        ([0.3, 0.3, 0.3], [0.3, 0.3, 0.3]),
    ):
        reused = pictures.saturation_image(
            left, right, "forget", (0.1, 0.9), "rnn", corners=("a", "b"), figures=figures
        )
        np.testing.assert_array_equal(
            reused,
            render(
                klv.gates.saturation_figure(
                    left, right, "forget", (0.1, 0.9), "rnn", corners=("a", "b")
                )
            ),
        )
    assert figures["heatmap"] is kept, "one figure per tag, redrawn"


def test_numpy_fallback_without_matplotlib_is_said_once(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    monkeypatch.setattr(klv.gates.pictures, "_warned", [])
    trace, ranges = lstm_trace()
    gates = {gate: trace[gate] for gate in trace.gate_names}
    with caplog.at_level("WARNING", logger="keras_lstm_variants"):
        image = klv.gates.pictures.heatmap_image(gates, ranges, sequence=0)
        scatter = klv.gates.pictures.saturation_image([0.5], [0.5], "forget", (0.1, 0.9))
    np.testing.assert_array_equal(image, klv.gates.heatmap(gates, ranges, sequence=0))
    np.testing.assert_array_equal(scatter, klv.gates.saturation_plot([0.5], [0.5]))
    [record] = caplog.records
    assert "matplotlib is not installed" in record.getMessage()
    assert "keras-lstm-variants[gates]" in record.getMessage()


def test_numpy_fallback_saturation_plot_puts_each_unit_at_its_fractions():
    image = klv.gates.saturation_plot(
        np.array([0.0, 1.0, 0.25]), np.array([1.0, 0.0, 0.5]), size=101, dot=0
    )
    blue = (image == klv.gates.DOT_COLOR).all(-1)
    rows, cols = np.nonzero(blue)
    assert sorted(zip(rows, cols, strict=True)) == [(2, 2), (50, 26), (98, 98)]  # 2 px margin
    assert (image[0, 1:-1] == 0).all() and (image[1:-1, -1] == 0).all(), "black border"
    assert (image[30, 30] == 200).all() and (image[30, 70] == 255).all(), "grey x + y = 1"


def test_numpy_fallback_heatmap_bands_colours_and_masked_steps():
    trace = {
        "forget": np.array([[[0.0, 1.0], [1.0, np.nan]]]),  # (batch 1, time 2, units 2)
        "candidate": np.array([[[-1.0, 1.0], [1.0, np.nan]]]),
    }
    ranges = {"forget": (0.0, 1.0), "candidate": (-1.0, 1.0)}
    image = klv.gates.heatmap(trace, ranges, width=2, band=2)
    assert image.shape == (2 + 2 + 2, 2, 3)  # two bands of 2 unit rows, a 2-row separator
    cmap, grey = klv.gates.COLORMAP, klv.gates.MASKED_COLOR
    np.testing.assert_array_equal(image[0], [cmap[0], cmap[-1]])  # unit 0 of forget over time
    np.testing.assert_array_equal(image[1], [cmap[-1], grey])
    np.testing.assert_array_equal(image[4], [cmap[0], cmap[-1]])  # candidate spans -1 .. 1
    assert (image[2:4] == 255).all()


def test_gate_ranges_come_from_the_cell():
    assert klv.gates.gate_range(klv.GRUCell(2), "reset") == (0.0, 1.0)
    assert klv.gates.gate_range(klv.LSTMCell(2, activation="softsign"), "candidate") == (-1, 1)
    exponential = klv.LSTMCell(2, recurrent_activation="exponential")
    assert klv.gates.gate_range(exponential, "forget") == (0.0, None)
    assert klv.gates.gate_range(klv.LSTMCell(2, activation="linear"), "candidate") == (None, None)
    declared = klv.LSTMCell(2)
    declared.gate_ranges = {"input": (0, 2)}  # a cell's own declaration wins
    assert klv.gates.gate_range(declared, "input") == (0.0, 2.0)


def test_descriptions_say_what_each_saturated_gate_means():
    lstm, gru = klv.LSTMCell(2), klv.GRUCell(2)
    cells = {
        "input": lstm,
        "forget": lstm,
        "output": lstm,
        "candidate": lstm,
        "update": gru,
        "reset": gru,
    }
    for statistic in ("left_saturated", "right_saturated", "saturation"):
        texts = {gate: klv.gates.describe(cell, gate, statistic) for gate, cell in cells.items()}
        assert len(set(texts.values())) == len(texts), statistic
        for gate, text in texts.items():
            assert f"{gate} gate" in text or f"A {gate}" in text, (gate, text)
            others = [g for g in cells if g != gate and g != "candidate"]
            assert not any(f"A {other} gate" in text for other in others), (gate, text)
    assert "keeps its cell" in klv.gates.describe(lstm, "forget", "right_saturated")
    assert "below 0.1" in klv.gates.describe(lstm, "forget", "left_saturated")
    assert "below -0.9" in klv.gates.describe(lstm, "candidate", "left_saturated")


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
    everything = dict.fromkeys(event_accumulator.DEFAULT_SIZE_GUIDANCE, 0)
    events = event_accumulator.EventAccumulator(os.path.join(log_dir, "gates"), everything)
    events.Reload()
    return log_dir, events, klv.gates.trace_layers(model, probe, mask=mask)


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
            statistics = {
                "mean": values.mean(),
                "left_saturated": np.mean(values < low),
                "right_saturated": np.mean(values > high),
            }
            for name, value in statistics.items():
                tag = f"gates/{layer}/{gate}/{name}"
                expected_tags.add(tag)
                [(step, logged_value)] = scalars[tag]
                assert step == 1, "every_n_epochs=2 logs after the second epoch only"
                np.testing.assert_allclose(logged_value, value, atol=1e-6, err_msg=tag)
    assert set(scalars) == expected_tags
    assert {"gates/bi/forward/input/mean", "gates/gru/update/right_saturated"} <= expected_tags


def decoded_image(events, tag):
    [event] = events.Tensors(tag)
    width, height, png = tf.make_ndarray(event.tensor_proto)
    assert png.startswith(b"\x89PNG"), tag
    decoded = tf.io.decode_png(png).numpy()
    assert decoded.shape == (int(height), int(width), 3), tag
    return decoded


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
    assert "gates/bi/forward/c" in kinds and "gates/gru/c" not in kinds, "a GRU has no c"

    trace = traces["bi/backward"]
    ranges = {gate: klv.gates.gate_range(trace.cell, gate) for gate in trace.gate_names}
    figure = klv.gates.heatmap_figure(
        {gate: trace[gate] for gate in trace.gate_names}, ranges, sequence=1, title="bi/backward"
    )
    heat = decoded_image(events, "gates/bi/backward/heatmap")
    assert heat.shape[:2] == klv.gates.pictures.heatmap_size(4) == (388, 360)
    np.testing.assert_array_equal(heat, klv.gates.pictures.render(figure))

    left, right = klv.gates.saturation(trace["forget"], "forget", axis=(0, 1))
    figure = klv.gates.saturation_figure(
        left,
        right,
        "forget",
        (0.1, 0.9),
        title="bi/backward",
        corners=("erases memory", "keeps memory"),
    )
    scatter = decoded_image(events, "gates/bi/backward/forget/saturation")
    assert scatter.shape[:2] == (300, 300)
    np.testing.assert_array_equal(scatter, klv.gates.pictures.render(figure))

    [histogram] = events.Tensors("gates/gru/h")
    counts = tf.make_ndarray(histogram.tensor_proto)[:, 2]
    assert counts.sum() == np.count_nonzero(~np.isnan(traces["gru"]["h"]))
    metadata = events.SummaryMetadata("gates/bi/forward/forget/right_saturated")
    assert "keeps its cell" in metadata.summary_description


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
        [
            sys.executable,
            "-c",
            TENSORBOARD_WITHOUT_TF,
            "--logdir",
            log_dir,
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--load_fast",
            "false",
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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


@pytest.mark.parametrize(
    "data, mask, match",
    [
        (np.zeros((2, 0, FEATURES)), None, r"`data` must not be empty.*zero time steps"),
        (np.zeros((0, TIME, FEATURES)), None, "`data` must not be empty"),
        (np.zeros((2,)), None, "`data` must be a probe batch"),
        ([], None, "`data` must be a probe batch"),
        (np.full((2, TIME, FEATURES), np.nan), None, "`data` must be finite"),
        ([np.zeros((2, TIME, FEATURES)), np.zeros((3, UNITS))], None, "one batch size"),
        (np.array([[["a"]]]), None, "`data` must be numeric"),
        (np.zeros((2, TIME, FEATURES)), np.zeros((2, TIME)), "masks every step of sequence"),
        (np.zeros((2, TIME, FEATURES)), np.full((2, TIME), 0.5), "`mask` must be boolean"),
    ],
)
def test_the_probe_is_checked_in_the_constructor(tmp_path, data, mask, match):
    with pytest.raises(ValueError, match=match):
        klv.GateStatistics(str(tmp_path), data, mask=mask)


def test_what_only_the_model_can_check_fails_before_training(tmp_path):
    model = keras.Sequential([keras.Input((TIME, FEATURES)), klv.GRU(UNITS, name="gru")])
    probe = np.zeros((2, TIME, FEATURES), "float32")
    callback = klv.GateStatistics(str(tmp_path), probe, mask=np.ones((2, TIME - 1), bool))
    callback.set_model(model)
    with pytest.raises(ValueError, match="`mask` has 5 time steps but layer 'gru'"):
        callback.on_train_begin()
    for layer_path, match in [
        ({"lstm": "rnn"}, r"renames \['lstm'\], which the model does not have.*\['gru'\]"),
        (3, "`layer_path` must be None, a non-empty name, or a dict"),
        ("", "`layer_path` must be None"),
    ]:
        with pytest.raises(ValueError, match=match):
            klv.GateStatistics(str(tmp_path), probe, layer_path=layer_path).set_model(model)
    two = keras.Model(
        inputs := keras.Input((TIME, FEATURES)),
        keras.layers.Concatenate()(
            [klv.GRU(UNITS, name="a")(inputs), klv.GRU(UNITS, name="b")(inputs)]
        ),
    )
    with pytest.raises(ValueError, match=r"names one layer, but the model has variant layers"):
        klv.GateStatistics(str(tmp_path), probe, layer_path="rnn").set_model(two)
    with pytest.raises(ValueError, match="gives two layers one tag path"):
        klv.GateStatistics(str(tmp_path), probe, layer_path={"a": "x", "b": "x"}).set_model(two)


def written_tags(log_dir):
    events = event_accumulator.EventAccumulator(
        os.path.join(log_dir, "gates"), dict.fromkeys(event_accumulator.DEFAULT_SIZE_GUIDANCE, 0)
    )
    events.Reload()
    return {
        tag: events.SummaryMetadata(tag).plugin_data.plugin_name for tag in events.Tags()["tensors"]
    }


def test_layer_path_gives_two_variants_the_same_tags_so_tensorboard_overlays_them(tmp_path):
    probe, _ = data("lstm")
    tags = {}
    for name, layer in [("lstm", klv.LSTM(UNITS, name="lstm")), ("gru", klv.GRU(UNITS))]:
        model = keras.Sequential([keras.Input((TIME, FEATURES)), layer])
        callback = klv.GateStatistics(str(tmp_path / name), probe, layer_path="rnn")
        callback.set_model(model)
        callback.write(0)
        tags[name] = written_tags(tmp_path / name)
    shared = set(tags["lstm"]) & set(tags["gru"])
    assert {
        "gates/rnn/candidate/right_saturated",
        "gates/rnn/candidate/saturation",
        "gates/rnn/heatmap",
        "gates/rnn/h",
    } <= shared
    assert all(tag.startswith("gates/rnn/") for run in tags.values() for tag in run)

    inputs = keras.Input((TIME, FEATURES))
    bidirectional = keras.layers.Bidirectional(klv.CIFGLSTM(UNITS), name="bi")
    model = keras.Model(inputs, bidirectional(inputs))
    callback = klv.GateStatistics(str(tmp_path / "bi"), probe, layer_path={"bi": "encoder"})
    callback.set_model(model)
    callback.write(0)
    assert {"gates/encoder/forward/forget/mean", "gates/encoder/backward/c"} <= set(
        written_tags(tmp_path / "bi")
    )


def test_a_gate_with_an_open_range_gets_its_mean_histogram_and_heatmap_only(tmp_path):
    layer = klv.LSTM(UNITS, recurrent_activation="exponential", name="lstm")
    model = keras.Sequential([keras.Input((TIME, FEATURES)), layer])
    randomize(layer)
    probe, _ = data("lstm")
    callback = klv.GateStatistics(str(tmp_path), probe)
    callback.set_model(model)
    callback.write(0)
    tags = written_tags(tmp_path)
    for gate in ("input", "forget", "output"):  # exp: (0, inf), saturation is undefined
        assert tags[f"gates/lstm/{gate}/mean"] == "scalars"
        assert tags[f"gates/lstm/{gate}"] == "histograms"
        assert f"gates/lstm/{gate}/right_saturated" not in tags
        assert f"gates/lstm/{gate}/saturation" not in tags
    assert tags["gates/lstm/candidate/right_saturated"] == "scalars"
    assert tags["gates/lstm/heatmap"] == "images"
    trace = klv.gates.trace_layers(model, probe)["lstm"]
    figure = klv.gates.heatmap_figure({"forget": trace["forget"]}, {"forget": (0.0, None)})
    [image] = figure.axes[0].get_images()
    forget = trace["forget"][0]
    assert image.get_clim() == (0.0, forget[np.isfinite(forget)].max()), "observed upper bound"


def test_time_distributed_is_refused_alone_and_left_out_with_a_warning_beside_others(caplog):
    inputs = keras.Input((2, TIME, FEATURES))
    wrapped = keras.layers.TimeDistributed(klv.LSTM(UNITS, name="inner"), name="td")
    model = keras.Model(inputs, wrapped(inputs))
    x = np.random.default_rng(0).normal(size=(BATCH, 2, TIME, FEATURES)).astype("float32")
    with pytest.raises(
        ValueError,
        match=r"'td/inner' \(inside TimeDistributed 'td'\).*"
        r"Trace the inner layer itself",
    ):
        klv.trace_gates(model, x)
    # The advice works: the inner layer traced on (batch * outer steps, time, features).
    traces = klv.trace_gates(wrapped.layer, x.reshape((-1, TIME, FEATURES)))
    assert traces["inner"]["forget"].shape == (BATCH * 2, TIME, UNITS)

    sequence = keras.Input((TIME, FEATURES))
    both = keras.Model([inputs, sequence], [wrapped(inputs), klv.GRU(UNITS, name="gru")(sequence)])
    with caplog.at_level("WARNING", logger="keras_lstm_variants"):
        traces = klv.trace_gates(both, [x, x[:, 0]])
    assert list(traces) == ["gru"]
    assert "leaves out 'td/inner'" in caplog.text


NO_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None  # import tensorflow fails
import numpy as np, keras, keras_lstm_variants as klv
arrays = np.load(sys.argv[1])
layer = klv.LSTM(arrays["units"].item(), return_sequences=True, name="lstm")
model = keras.Sequential([keras.Input(arrays["x"].shape[1:]), layer])
layer.set_weights([arrays["kernel"], arrays["recurrent_kernel"], arrays["bias"]])
traces = klv.trace_gates(model, arrays["x"], mask=arrays["mask"])
np.savez(sys.argv[2], backend=keras.backend.backend(), **traces["lstm"])
try:
    klv.GateStatistics(sys.argv[3], arrays["x"])
except ImportError as error:
    print(error)
"""


def test_without_tensorflow_trace_gates_works_and_gate_statistics_says_what_to_install(
    tmp_path,
):
    layer = make_layer("lstm", return_sequences=True)
    keras.Sequential([keras.Input((TIME, FEATURES)), layer])
    weights = randomize(layer)
    x, _ = data("lstm")
    mask = padding_mask()
    np.savez(
        tmp_path / "in.npz",
        x=x,
        mask=mask,
        units=UNITS,
        kernel=weights[0],
        recurrent_kernel=weights[1],
        bias=weights[2],
    )
    environment = {**os.environ, "KERAS_BACKEND": "jax"}
    script = tmp_path / "no_tensorflow.py"
    script.write_text(NO_TENSORFLOW)
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "in.npz"),
            str(tmp_path / "out.npz"),
            str(tmp_path / "logs"),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pip install tensorflow" in done.stdout
    traced = dict(np.load(tmp_path / "out.npz"))
    assert str(traced.pop("backend")) == "jax"
    zeros = [np.zeros((BATCH, UNITS))] * 2
    expected, _ = oracle_trace(reference_step("lstm", weights), x, zeros, mask)
    assert_trace_equal(traced, expected)


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
    assert "gates/rnn/forget/right_saturated" in written_tags(tmp_path / "cifg")
    assert os.listdir(tmp_path / "cifg" / "train"), "keras.callbacks.TensorBoard wrote beside it"

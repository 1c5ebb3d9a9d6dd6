"""The ``bench`` sub-command: table and JSON structure on a tiny shape, and its bad-input errors.

No test here asserts a time: a benchmark is not a timed test. That the sequence layers' loop
computes what ``keras.layers.RNN(cell)`` computes, forward and gradients, is proven in
tests/test_layers.py (``test_layer_loop_equals_rnn_of_cell``).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_lstm_variants as klv
from keras_lstm_variants.commands import bench, cli

TINY = ["--batch", "3", "--time", "5", "--features", "4", "--units", "6"]


def test_bench_writes_table_and_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = [
        "bench",
        *TINY,
        "--repeats",
        "2",
        "--variants",
        "cifg",
        "--gemm-size",
        "64",
        "--memory-steps",
        "",
        "--inference-steps",
        "7",
        "--inference-units",
        "5",
        "--anchors",
        "none",
        "--json",
        str(path),
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    (result,) = json.loads(path.read_text())["runs"]
    backend = keras.backend.backend()
    assert result["backend"] == backend and result["versions"]["keras"] == keras.__version__
    jit_modes = bench.JIT_MODES[backend]

    # every model measured, in each jit mode of the backend: the variant and its stock layer
    models = {(r["model"], r["jit_compile"]) for r in result["records"]}
    assert models == {(m, jit) for m in ("cifg", "keras.LSTM") for jit in jit_modes}
    for record in result["records"]:
        assert record["shape"] == {"batch": 3, "time": 5, "features": 4, "units": 6}
        assert record["train_ms"] > 0 and record["predict_ms"] > 0
        assert record["train_cpu_ms"] >= 0 and record["predict_cpu_ms"] >= 0
        assert (record["compile_s"] is not None) == record["jit_compile"]
    # GEMM flops read off the weights: CIFG has 3 fused blocks, the stock LSTM 4
    flops = {r["model"]: r["forward_flops"] for r in result["records"]}
    assert flops == {m: 2 * 3 * 5 * (4 + 6) * g * 6 for m, g in (("cifg", 3), ("keras.LSTM", 4))}
    assert result["peak_gflops"] == max(result["gemm_gflops"].values()) > 0

    # one comparison row per jit mode, its ratios consistent with the records
    rows = result["comparisons"]
    assert [(r["variant"], r["jit_compile"]) for r in rows] == [("cifg", j) for j in jit_modes]
    for row in rows:
        assert row["stock"] == "keras.LSTM" and row["anchor"] is None
        assert row["train_ratio"] == pytest.approx(row["train_ms"] / row["stock_train_ms"])
        assert row["predict_ratio"] == pytest.approx(row["predict_ms"] / row["stock_predict_ms"])
    if jit_modes == (False, True):
        assert rows[0]["jit_vs_no_jit_train"] is None
        assert rows[1]["jit_vs_no_jit_train"] == pytest.approx(
            rows[1]["train_ms"] / rows[0]["train_ms"]
        )

    # the long-inference memory check ran in a real subprocess, at the requested shape
    (memory,) = result["memory"]
    assert memory["model"] == "cifg" and memory["mode"] == "predict" and memory["finite"]
    assert memory["shape"]["time"] == 7 and memory["shape"]["units"] == 5
    assert memory["peak_rss_mb"] >= memory["rss_before_mb"] > 0 and memory["peak_reset"]

    # the table shows one row per jit mode and the memory line; progress goes to stderr
    table = out.out.splitlines()
    rows_shown = sum(line.startswith("3x5x4x6") and " cifg " in line for line in table)
    assert rows_shown == len(jit_modes)
    assert any(line.startswith("cifg") and "predict" in line for line in table)
    assert "repeat 2/2" in out.err


@pytest.mark.parametrize("name", sorted(klv.VARIANTS))
def test_step_flops_count_every_matrix_weight(name):
    """Two flops per multiply-add of each per-step product with a matrix weight of the built
    cell, whatever weights it has; for the fused LSTM layout that is ``2 B (F + U) G U``."""
    shape = bench.Shape(batch=3, time=5, features=4, units=6)
    model = bench.build_model(name, shape, jit_compile=False)
    cell = model.layers[-1].cell
    matrices = [w for w in cell.trainable_weights if len(w.shape) == 2 and "bias" not in w.name]
    assert matrices, "a recurrent cell without a matrix weight"
    expected = sum(2 * shape.batch * w.shape[0] * w.shape[1] for w in matrices)
    if hasattr(cell, "flops_per_step"):
        expected = cell.flops_per_step(shape.batch)
    assert bench.step_flops(model, shape.batch) == expected
    if hasattr(cell, "kernel") and hasattr(cell, "recurrent_kernel") and len(matrices) == 2:
        blocks = cell.kernel.shape[1] // shape.units
        assert expected == bench.forward_flops(shape, blocks) // shape.time


def test_spec_strings_reach_the_layer(tmp_path, capsys):
    """``--variants`` takes spec strings: each builds the layer it names (options included)
    and is compared with its family's stock layer; the output width follows the layer."""
    argv = ["bench", *TINY, "--repeats", "1", "--no-jit", "--sections", "speed"]
    argv += ["--anchors", "none"]
    path = tmp_path / "bench.json"
    spec = "lstm+unit_forget_bias=false"
    assert cli.main([*argv, "--gemm-size", "32", "--variants", spec, "--json", str(path)]) == 0
    (result,) = json.loads(path.read_text())["runs"]
    assert [r["model"] for r in result["records"]] == [spec, "keras.LSTM"]
    assert [row["variant"] for row in result["comparisons"]] == [spec]
    assert any(spec in line for line in capsys.readouterr().out.splitlines())
    model = bench.build_model(spec, bench.Shape(3, 5, 4, 6), jit_compile=False)
    assert model.layers[-1].cell.unit_forget_bias is False
    assert bench.stock_of("gru") == "keras.GRU" and bench.stock_of(spec) == "keras.LSTM"


def test_a_failing_disk_loses_no_table(tmp_path, capsys, monkeypatch):
    """A failure while writing the JSON loses nothing: the measuring goes on, the table
    reaches stdout, the failure is one line on stderr and the exit code is 1."""
    path = tmp_path / "bench.json"
    argv = [*TINY, "--repeats", "1", "--no-jit", "--sections", "speed", "--gemm-size", "32"]
    argv += ["--anchors", "none"]

    def failing_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", failing_dump)
    assert cli.main(["bench", *argv, "--variants", "gru", "--json", str(path)]) == 1
    out = capsys.readouterr()
    assert "3x5x4x6" in out.out and "gru" in out.out
    assert out.err.count("disk full") == 1 and not path.exists()


def test_torch_anchor_matches_its_model_and_counts_its_flops():
    """The anchor is the torch layer it names, timed on the same data: its prediction is the
    last output of that layer, and its flops are those of the equal Keras layer."""
    torch = pytest.importorskip("torch")
    shape = bench.Shape(batch=3, time=5, features=4, units=6)
    x = np.random.default_rng(0).standard_normal((3, 5, 4), dtype=np.float32)
    for kind, stock in (("torch.nn.LSTM", "keras.LSTM"), ("torch.nn.GRU", "keras.GRU")):
        anchor = bench.TorchAnchor(kind, shape)
        assert type(anchor.rnn) is getattr(torch.nn, kind.split(".")[-1])
        with torch.no_grad():
            expected = anchor.rnn(torch.from_numpy(x))[0][:, -1].numpy()
        np.testing.assert_allclose(anchor.predict_on_batch(x), expected, rtol=1e-6)
        loss = anchor.train_on_batch(x, bench.target(anchor, shape))
        assert np.isfinite(loss)
        # trained: the weights moved, so the prediction changed
        assert not np.allclose(anchor.predict_on_batch(x), expected)
        keras_model = bench.build_model(stock, shape, jit_compile=False)
        assert bench.step_flops(anchor, 3) == bench.step_flops(keras_model, 3)


def test_each_backend_runs_in_its_own_process(tmp_path):
    """``--backend jax`` from a TensorFlow process: the run happens in a subprocess whose
    Keras backend is JAX (and the torch anchor is timed there, with the given threads)."""
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    path = tmp_path / "bench.json"
    argv = [*TINY, "--repeats", "1", "--sections", "speed", "--gemm-size", "32"]
    argv += ["--variants", "gru", "--backend", "jax", "--torch-threads", "1", "--json", str(path)]
    command = [sys.executable, "-m", "keras_lstm_variants", "bench", *argv]
    env = {**__import__("os").environ, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = json.loads(path.read_text())["runs"]
    assert run["backend"] == "jax" and "jax" in run["versions"] and run["torch_threads"] == 1
    assert run["device"].startswith("cpu")
    assert [r["model"] for r in run["records"]] == ["gru", "keras.GRU", "torch.nn.GRU"]
    (row,) = run["comparisons"]
    assert row["backend"] == "jax" and row["anchor"] == "torch.nn.GRU"
    assert row["anchor_train_ratio"] == pytest.approx(row["train_ms"] / row["anchor_train_ms"])
    assert "backend jax on cpu" in done.stdout and "torch" in done.stdout


def _plan(*argv):
    return bench.parse(cli.build_parser().parse_args(["bench", *argv]))


def test_specs_are_validated_at_the_units_they_are_measured_with():
    """``num_heads`` must divide the units: checked at the shapes' units (and the memory
    checks'), not at a stand-in size."""
    plan = _plan("--variants", "mlstm+num_heads=4,slstm+num_heads=4", "--units", "8")
    assert plan["variants"] == ["mlstm+num_heads=4", "slstm+num_heads=4"]
    assert [shape.units for shape in plan["shapes"]] == [8]
    with pytest.raises(cli.UsageError, match=r"'mlstm\+num_heads=3' at 8 units"):
        _plan("--variants", "mlstm+num_heads=3", "--units", "8", "--sections", "speed")
    # the long-inference memory check builds at --inference-units: checked there too
    with pytest.raises(cli.UsageError, match=r"'mlstm\+num_heads=4' at 6 units"):
        _plan("--variants", "mlstm+num_heads=4", "--units", "8", "--inference-units", "6")


#: Makes the JAX measuring process die by SIGSEGV as it starts (what triton did to it).
CRASH_JAX = """
import os, signal, sys
argv = " ".join(getattr(sys, "orig_argv", []))
if os.environ.get("KERAS_BACKEND") == "jax" and "keras_lstm_variants" in argv and "bench" in argv:
    os.kill(os.getpid(), signal.SIGSEGV)
"""


def test_a_backend_killed_by_a_signal_is_one_line_and_the_others_are_kept(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("tensorflow")
    (tmp_path / "sitecustomize.py").write_text(CRASH_JAX)
    path = tmp_path / "bench.json"
    argv = [*TINY, "--repeats", "1", "--sections", "speed", "--gemm-size", "32"]
    argv += ["--variants", "gru", "--anchors", "none", "--backend", "tensorflow,jax"]
    command = [sys.executable, "-m", "keras_lstm_variants", "bench", *argv, "--json", str(path)]
    python_path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": python_path}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    (line,) = [line for line in done.stdout.splitlines() if "FAILED" in line]
    assert line == "jax: FAILED: the jax process died by signal SIGSEGV"
    tensorflow, jax = json.loads(path.read_text())["runs"]
    assert tensorflow["backend"] == "tensorflow" and "error" not in tensorflow
    assert {r["model"] for r in tensorflow["records"]} == {"gru", "keras.GRU"}
    assert jax["backend"] == "jax" and "SIGSEGV" in jax["error"]
    assert "jax: FAILED" in (tmp_path / "bench.md").read_text()


def test_torch_anchors_are_timed_outside_the_tensorflow_process(tmp_path):
    """PyPI's torch (CUDA build) imports triton when the anchor's optimizer is built, which
    crashes a process holding TensorFlow's LLVM: the anchors run in a process of their own,
    and the TensorFlow process never imports torch."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    path = tmp_path / "bench.json"
    argv = [*TINY, "--repeats", "1", "--sections", "speed", "--gemm-size", "32", "--no-jit"]
    argv += ["--variants", "lstm", "--backend", "tensorflow", "--torch-threads", "1"]
    command = [sys.executable, "-m", "keras_lstm_variants", "bench", *argv, "--json", str(path)]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = json.loads(path.read_text())["runs"]
    assert "torch" not in run["versions"]  # the measuring process imported no torch
    assert [r["model"] for r in run["records"]] == ["lstm", "keras.LSTM", "torch.nn.LSTM"]
    (row,) = run["comparisons"]
    assert row["anchor"] == "torch.nn.LSTM" and row["anchor_train_ms"] > 0

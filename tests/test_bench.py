"""The ``bench`` sub-command: table and JSON structure on a tiny shape, and its bad-input errors.

No test here asserts a time: a benchmark is not a timed test. That the sequence layers' loop
computes what ``keras.layers.RNN(cell)`` computes, forward and gradients, is proven in
tests/test_layers.py (``test_layer_loop_equals_rnn_of_cell``).
"""

import json

import pytest

import keras_lstm_variants as klv
from keras_lstm_variants import bench, cli

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
        "--json",
        str(path),
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    result = json.loads(path.read_text())

    # every model measured, with and without XLA: the variant and its stock counterpart
    models = {(r["model"], r["jit_compile"]) for r in result["records"]}
    assert models == {(m, jit) for m in ("cifg", "keras.LSTM") for jit in (False, True)}
    for record in result["records"]:
        assert record["shape"] == {"batch": 3, "time": 5, "features": 4, "units": 6}
        assert record["train_ms"] > 0 and record["predict_ms"] > 0
        assert record["train_cpu_ms"] >= 0 and record["predict_cpu_ms"] >= 0
        assert (record["compile_s"] is not None) == record["jit_compile"]
    assert {r["model"]: r["blocks"] for r in result["records"]} == {"cifg": 3, "keras.LSTM": 4}
    assert result["peak_gflops"] == max(result["gemm_gflops"].values()) > 0

    # one comparison row per jit mode, its ratios consistent with the records
    rows = result["comparisons"]
    assert [(r["variant"], r["jit_compile"]) for r in rows] == [("cifg", False), ("cifg", True)]
    for row in rows:
        assert row["stock"] == "keras.LSTM"
        assert row["train_ratio"] == pytest.approx(row["train_ms"] / row["stock_train_ms"])
        assert row["predict_ratio"] == pytest.approx(row["predict_ms"] / row["stock_predict_ms"])
    assert rows[0]["jit_vs_no_jit_train"] is None
    assert rows[1]["jit_vs_no_jit_train"] == pytest.approx(
        rows[1]["train_ms"] / rows[0]["train_ms"]
    )

    # the long-inference memory check ran in a real subprocess, at the requested shape
    (memory,) = result["memory"]
    assert memory["model"] == "cifg" and memory["mode"] == "predict" and memory["finite"]
    assert memory["shape"]["time"] == 7 and memory["shape"]["units"] == 5
    assert memory["peak_rss_mb"] >= memory["rss_before_mb"] > 0

    # the table shows both rows and the memory line; progress goes to stderr
    table = out.out.splitlines()
    assert sum(line.startswith("3x5x4x6") and " cifg " in line for line in table) == 2
    assert any(line.startswith("cifg") and "predict" in line for line in table)
    assert "repeat 2/2" in out.err


@pytest.mark.parametrize("name", sorted(klv.VARIANTS))
def test_forward_flops_match_the_weight_shapes(name):
    """``2 B T (F + U) G U`` equals two flops per multiply-add of each step's two GEMMs,
    counted from the built layer's actual ``kernel`` and ``recurrent_kernel``."""
    shape = bench.Shape(batch=3, time=5, features=4, units=6)
    model = bench.build_model(name, shape, jit_compile=False)
    cell = model.layers[-1].cell
    per_step = (
        2
        * shape.batch
        * (
            cell.kernel.shape[0] * cell.kernel.shape[1]
            + cell.recurrent_kernel.shape[0] * cell.recurrent_kernel.shape[1]
        )
    )
    assert bench.forward_flops(shape, bench.gate_blocks(model)) == shape.time * per_step


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["--variants", "lstm,nope"], "--variants"),
        (["--repeats", "0"], "--repeats"),
        (["--units", "-3"], "--units"),
        (["--memory-steps", "250,x"], "--memory-steps"),
        (["--inference-steps", "-1"], "--inference-steps"),
        (["--sections", "speed,colour"], "--sections"),
        (["--json", "/no/such/directory/bench.json"], "--json"),
    ],
)
def test_bad_input_names_the_argument(arguments, named, capsys):
    assert cli.main(["bench", *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("keras-lstm-variants bench: error:") and named in error

"""Watch the gates learn to remember: subject-verb agreement, logged with GateStatistics.

Task: the synthetic agreement language of :mod:`keras_lstm_variants.commands.tasks` (after Linzen,
Dupoux & Goldberg 2016). "The cat(s), which chased the toys ..., was / were": the network reads
the subject, ``--distance`` distractor tokens (the last noun always has the other number) and
a comma, then predicts the verb's number. Chance is 50 %; only a unit that holds the subject's
number across the whole clause gets it right, and the gates show whether one does.

Each selected variant trains with ``keras.callbacks.TensorBoard`` and
:class:`keras_lstm_variants.GateStatistics` sharing ``--log-dir/<variant>``, so TensorBoard shows
the runs ``<variant>/train``, ``<variant>/validation`` and ``<variant>/gates`` side by side; the
gate tags name every variant's layer ``rnn`` (``layer_path="rnn"``), so one chart per gate
overlays the variants (``gates/rnn/forget/right_saturated``: one line per run).
Printed: validation accuracy, then the gate that keeps memory (LSTM family: forget, c_t =
f c_{t-1} + ...; GRU: update, h_t = z h_{t-1} + ...) traced on the probe batch after training
(mean, saturated fractions over all units, and the right-saturated fraction of the unit that
is right-saturated most often), and the ``tensorboard --logdir`` command.

    python examples/gate_inspection.py                        # every variant, ~minutes
    python examples/gate_inspection.py --quick --variants gru # a small run (what the test runs)
"""

import os
import tempfile
import time

import _common
import keras

import keras_lstm_variants as klv
from keras_lstm_variants.commands.tasks import agreement_data

#: The gate whose right saturation means "keep the memory": the GRU's update gate, else the
#: forget gate where the cell has one, else its first gate.
KEEP_GATE = {"gru": "update"}
PROBE_SIZE = 64


def build(variant, units, vocabulary):
    model = keras.Sequential(
        [
            keras.Input((None, vocabulary)),
            klv.VARIANTS[variant][1](units, name=variant),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy", metrics=["accuracy"])
    return model


def main(argv=None):
    parser = _common.make_parser(__doc__.split("\n")[0], epochs=30, units=16)
    parser.add_argument(
        "--distance",
        type=_common.positive_int,
        default=12,
        help="distractor tokens between subject and verb",
    )
    parser.add_argument(
        "--size", type=_common.positive_int, default=4000, help="training sentences"
    )
    parser.add_argument("--every-n-epochs", type=_common.positive_int, default=1)
    parser.add_argument(
        "--log-dir",
        default=os.path.join(tempfile.gettempdir(), "gate-logs"),
        help="TensorBoard log directory (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.units, args.distance, args.size = 2, 4, 4, 256

    x, y = agreement_data(args.distance, args.size, seed=args.seed)
    x_valid, y_valid = agreement_data(
        args.distance, max(args.size // 4, PROBE_SIZE), seed=args.seed + 1
    )
    probe = x_valid[:PROBE_SIZE]
    rows = []
    for name in args.variants:
        keras.utils.set_random_seed(args.seed)
        model = build(name, args.units, x.shape[-1])
        log_dir = os.path.join(args.log_dir, name)
        callbacks = [
            keras.callbacks.TensorBoard(log_dir),
            klv.GateStatistics(
                log_dir, probe, every_n_epochs=args.every_n_epochs, layer_path="rnn"
            ),
        ]
        start = time.perf_counter()
        history = model.fit(
            x,
            y,
            validation_data=(x_valid, y_valid),
            epochs=args.epochs,
            batch_size=args.batch_size,
            callbacks=callbacks,
            verbose=0,
        )
        seconds = time.perf_counter() - start
        trace = klv.gates.trace_layers(model, probe)[name]
        default = "forget" if "forget" in trace.gate_names else trace.gate_names[0]
        gate = KEEP_GATE.get(name, default)
        values, bounds = trace[gate], klv.gates.gate_range(trace.cell, gate)
        left, right = klv.gates.saturation(values, gate, bounds=bounds)
        _, unit_right = klv.gates.saturation(values, gate, axis=(0, 1), bounds=bounds)
        rows.append(
            (
                name,
                history.history["val_accuracy"][-1],
                gate,
                float(values.mean()),
                float(right),
                float(left),
                float(unit_right.max()),
                args.epochs,
                seconds,
            )
        )
    _common.print_table(
        f"Subject-verb agreement over {args.distance} distractors ({args.size} sentences); "
        f"keep gate traced on {len(probe)} validation sentences after training",
        (
            "model",
            "val accuracy",
            "keep gate",
            "mean",
            "right sat. (>0.9)",
            "left sat. (<0.1)",
            "most right-sat. unit",
            "epochs",
            "train s",
        ),
        rows,
    )
    print(f"\nSee the gates: tensorboard --logdir {args.log_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

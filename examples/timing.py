"""Timing tasks of Gers & Schmidhuber 2000, where peepholes were introduced: PeepholeLSTM vs LSTM.

Gers & Schmidhuber, "Recurrent nets that time and count" (IJCNN 2000) add peephole weights
from the cell state ``c`` to the gates so that a gate can act on the *time* a cell has been
counting, even while the output gate is closed and ``h`` reveals nothing. Two of its tasks:

``gts`` (generating timed spikes, default)
    At a random step ``t1`` the input shows a spike together with a delay ``d`` (as ``d / D``,
    ``D = --max-delay``); no further cue follows. The output must spike exactly at
    ``t1 + d`` and stay low elsewhere (sigmoid output, binary cross-entropy per step). Scored:
    the share of test sequences whose highest output after ``t1`` is at exactly ``t1 + d``,
    and the mean absolute timing error in steps.
``msd`` (measuring spike delays)
    Two input spikes ``d`` steps apart; at the second spike the output must give ``d``
    (as ``d / D``, squared error at that step only). Scored: the share of test sequences with
    ``round(D * output) == d``, and the mean absolute error in steps.

Delays are drawn uniformly from ``--min-delay``..``--max-delay``; every sequence has
``D + 10`` steps. 2000 sequences train, 500 validate, 1000 test, all drawn from ``--seed``.

    python examples/timing.py --variants lstm,peephole            # full run, gts
    python examples/timing.py --task msd --variants lstm,peephole
    python examples/timing.py --quick                             # what the test runs
"""

import _common
import keras
import numpy as np


def spikes(task, n, min_delay, max_delay, rng):
    """Inputs ``(n, T, 2)``, targets ``(n, T, 1)``, step weights ``(n, T)``, t1 and delays."""
    steps = max_delay + 10
    delay = rng.integers(min_delay, max_delay + 1, n)
    t1 = rng.integers(0, steps - max_delay, n)
    t2 = t1 + delay
    rows = np.arange(n)
    x = np.zeros((n, steps, 2), "float32")
    y = np.zeros((n, steps, 1), "float32")
    x[rows, t1, 0] = 1.0
    if task == "gts":
        x[rows, t1, 1] = delay / max_delay
        y[rows, t2, 0] = 1.0
        weight = np.ones((n, steps), "float32")
    else:
        x[rows, t2, 0] = 1.0
        y[rows, t2, 0] = delay / max_delay
        weight = np.zeros((n, steps), "float32")
        weight[rows, t2] = 1.0
    return x, y, weight, t1, delay


def score(task, output, t1, delay, max_delay):
    """(share exactly right, mean absolute error in steps) of the outputs ``(n, T)``."""
    rows = np.arange(len(output))
    if task == "gts":
        after = np.where(np.arange(output.shape[1]) > t1[:, None], output, -np.inf)
        error = np.argmax(after, 1) - (t1 + delay)
        return float(np.mean(error == 0)), float(np.mean(np.abs(error)))
    measured = output[rows, t1 + delay] * max_delay
    return (
        float(np.mean(np.round(measured) == delay)),
        float(np.mean(np.abs(measured - delay))),
    )


def main():
    parser = _common.make_parser(__doc__.split("\n")[0], epochs=60, units=8)
    parser.add_argument("--task", choices=("gts", "msd"), default="gts")
    parser.add_argument("--min-delay", type=_common.positive_int, default=5)
    parser.add_argument("--max-delay", type=_common.positive_int, default=30)
    args = parser.parse_args()
    if args.min_delay > args.max_delay:
        parser.error(f"--min-delay {args.min_delay} exceeds --max-delay {args.max_delay}")
    sizes = (2000, 500, 1000)
    if args.quick:
        args.epochs, sizes = 2, (256, 64, 128)

    rng = np.random.default_rng(args.seed)
    train, valid, test = (spikes(args.task, n, args.min_delay, args.max_delay, rng) for n in sizes)
    gts = args.task == "gts"

    def build(name):
        model = keras.Sequential(
            [
                keras.Input((None, 2)),
                _common.recurrent_layer(name, args.units, return_sequences=True),
                keras.layers.Dense(1, activation="sigmoid" if gts else None),
            ]
        )
        model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy" if gts else "mse")
        return model

    def evaluate(model):
        output = model.predict(test[0], verbose=0)[..., 0]
        return score(args.task, output, test[3], test[4], args.max_delay)

    return _common.compare(
        args,
        build,
        (train[0], train[1], valid[:3], train[2]),
        evaluate,
        f"{args.task}: delays {args.min_delay}-{args.max_delay} steps, {sizes[2]} test sequences",
        ("exact", "MAE (steps)"),
        patience=10,
    )


if __name__ == "__main__":
    raise SystemExit(main())

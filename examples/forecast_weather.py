"""Forecast Seattle's daily high temperature with each variant, against the naive forecast.

Data: ``vega_datasets.local_data.seattle_weather()``, 1461 days of 2012-2015 shipped inside
the vega_datasets package (no download). Each input is the last ``--window`` days of
(temp_max, temp_min, precipitation, wind), standardized with training statistics; the target
is temp_max ``--horizon`` days after the window's last day.

Split by time: windows whose target falls in 2012-2014 train (the last 15 % of them validate,
for early stopping); windows whose target falls in 2015 are the held-out later period that is
scored. The baseline is the naive last-value forecast (tomorrow's high = today's high).
Printed: MAE and RMSE in degrees Celsius on 2015, one row per model.

    python examples/forecast_weather.py            # full run
    python examples/forecast_weather.py --quick    # a few epochs (what the test runs)
"""

import _common
import keras
import numpy as np
from vega_datasets import local_data

FEATURES = ("temp_max", "temp_min", "precipitation", "wind")
TARGET = "temp_max"
TEST_YEAR = 2015


def windows(frame, window, horizon):
    """Inputs ``(n, window, features)``, targets ``(n,)``, last observed targets and years."""
    values = frame[list(FEATURES)].to_numpy("float32")
    target = frame[TARGET].to_numpy("float32")
    years = frame["date"].dt.year.to_numpy()
    ends = np.arange(window - 1, len(frame) - horizon)  # index of each window's last day
    x = np.stack([values[end - window + 1 : end + 1] for end in ends])
    return x, target[ends + horizon], target[ends], years[ends + horizon]


def errors(prediction, truth):
    """(MAE, RMSE) of a forecast."""
    error = np.asarray(prediction, "float64") - truth
    return float(np.mean(np.abs(error))), float(np.sqrt(np.mean(error**2)))


def main():
    parser = _common.make_parser(__doc__.split("\n")[0], epochs=60, units=32)
    parser.add_argument("--window", type=_common.positive_int, default=14, help="days of input")
    parser.add_argument(
        "--horizon", type=_common.positive_int, default=1, help="days ahead to forecast"
    )
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.units, args.window = 2, 8, 7

    x, y, last, years = windows(local_data.seattle_weather(), args.window, args.horizon)
    test = years == TEST_YEAR
    n_fit = int(np.sum(~test) * 0.85)
    train, valid = slice(0, n_fit), slice(n_fit, int(np.sum(~test)))
    mean, std = x[train].reshape(-1, x.shape[-1]).mean(0), x[train].reshape(-1, x.shape[-1]).std(0)
    y_mean, y_std = y[train].mean(), y[train].std()
    x = (x - mean) / std
    y_scaled = (y - y_mean) / y_std

    def build(name):
        model = keras.Sequential(
            [
                keras.Input(x.shape[1:]),
                _common.recurrent_layer(name, args.units),
                keras.layers.Dense(1),
            ]
        )
        model.compile(keras.optimizers.Adam(3e-3), "mse")
        return model

    def evaluate(model):
        return errors(model.predict(x[test], verbose=0)[:, 0] * y_std + y_mean, y[test])

    return _common.compare(
        args,
        build,
        (x[train], y_scaled[train], (x[valid], y_scaled[valid])),
        evaluate,
        f"Seattle daily high, {args.horizon} day(s) ahead from {args.window} days; "
        f"test {TEST_YEAR} ({int(test.sum())} days), degrees C",
        ("MAE", "RMSE"),
        baselines=[("naive last value", *errors(last[test], y[test]))],
    )


if __name__ == "__main__":
    raise SystemExit(main())

"""The figures of ``keras-lstm-variants study`` (:mod:`.study_analysis` computes the numbers).

* :func:`plot_boxes`: the held-out metric per variant, all trials and the best ones, as
  Greff et al. 2017's Fig. 3;
* :func:`plot_importance`: fANOVA importance per hyperparameter, pooled and per variant;
* :func:`plot_learning_rate`: each trial's metric against its learning rate.

Each takes the dict of :func:`.study_analysis.analyse` and a PNG path.
"""

import math

import numpy as np


def _log_scale(result, values):
    """A log axis for a lower-is-better metric spanning more than a decade (the trivial
    predictor's line included)."""
    values = [v for v in [*values, result["chance"]] if v is not None and math.isfinite(v)]
    return bool(
        result["lower_is_better"] and values and min(values) > 0 and max(values) > 10 * min(values)
    )


def plot_boxes(result, path):
    """Box plots of the held-out metric per variant, all trials (top) and the best trials
    (bottom): boxes 25th-75th percentile, whiskers the whole range, red line the median, red
    dot the mean; variants significantly different from the baseline drawn thick and blue (as
    Greff et al.'s Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = result["variants"]
    figure, axes = plt.subplots(2, 1, figsize=(max(7, 1.1 * len(variants) + 2), 8), sharex=True)
    for ax, key in zip(axes, ("all", "top"), strict=True):
        data = result["sets"][key]
        values = [data["values"][v] for v in variants]
        boxes = ax.boxplot(values, whis=(0, 100), patch_artist=True, medianprops={"color": "red"})
        for patch, variant in zip(boxes["boxes"], variants, strict=True):
            test = data["tests"].get(variant)
            significant = bool(test and test["significant"])
            patch.set_facecolor("tab:blue" if significant else "white")
            patch.set_alpha(0.5 if significant else 1)
            patch.set_linewidth(2.5 if significant else 1)
        means = [np.mean(v) if len(v) else np.nan for v in values]
        ax.plot(range(1, len(variants) + 1), means, "o", color="red", label="mean")
        if result["chance"] is not None:
            ax.axhline(result["chance"], color="grey", linestyle="--", label="trivial predictor")
        if _log_scale(result, [x for v in values for x in v]):
            ax.set_yscale("log")
        ax.set_title(
            "all trials"
            if key == "all"
            else f"best {result['top_fraction']:.0%} of trials (by validation)"
        )
        ax.set_ylabel(result["metric"])
        ax.legend(fontsize="small")
    axes[-1].set_xticks(range(1, len(variants) + 1), variants, rotation=30)
    figure.suptitle(
        f"held-out {result['metric']} per variant; blue, thick: significantly different from "
        f"{result['baseline']} (Welch, Bonferroni)",
        fontsize="medium",
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_importance(result, path):
    """fANOVA importance per hyperparameter, pooled and per variant (grouped bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["parameters"])
    rows = [(k, v) for k, v in result["importance"].items() if v]
    figure, ax = plt.subplots(figsize=(max(6, 1.6 * len(names) + 2), 4))
    width = 0.8 / max(1, len(rows))
    for i, (key, shares) in enumerate(rows):
        x = np.arange(len(names)) + i * width
        ax.bar(x, [shares.get(n, 0) for n in names], width, label=key)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_ylabel("share of variance (fANOVA, main effects)")
    ax.set_title("hyperparameter importance")
    ax.legend(fontsize="x-small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_learning_rate(result, path):
    """Each trial's cleaned held-out metric against its learning rate, one colour per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 4.5))
    for variant in result["variants"]:
        points = [p for p in result["points"] if p["variant"] == variant]
        ax.scatter(
            [p["params"]["learning_rate"] for p in points],
            [p["value"] for p in points],
            label=variant,
            s=18,
            alpha=0.8,
        )
    ax.set_xscale("log")
    if _log_scale(result, [p["value"] for p in result["points"]]):
        ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"held-out {result['metric']}")
    ax.legend(fontsize="x-small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)

"""``compare``'s picture: final loss against ``T`` and the learning curves (matplotlib)."""

from .tasks import TASKS


def plot(report, path):
    """Save a PNG with a row per task: the median final held-out loss against ``T`` (band:
    lowest to highest seed; dashed: the trivial predictor's loss), and at the longest ``T``
    each run's held-out loss against training steps (one line per seed)."""
    import matplotlib.pyplot as plt

    entries = [entry for entry in report["tasks"].values() if entry["results"]]
    figure, axes = plt.subplots(len(entries), 2, figsize=(13, 4.2 * len(entries)), squeeze=False)
    for (final, learning), entry in zip(axes, entries, strict=True):
        config, rows, runs = entry["settings"], entry["results"], entry["runs"]
        task = TASKS[config["task"]]
        lengths = sorted({row["length"] for row in rows})
        colours = {}
        for model in config["variants"]:
            mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["length"])
            if not mine:
                continue
            x = [r["length"] for r in mine]
            (line,) = final.plot(x, [r["loss"] for r in mine], marker="o", label=model)
            colours[model] = line.get_color()
            final.fill_between(
                x,
                [r["min_loss"] for r in mine],
                [r["max_loss"] for r in mine],
                color=colours[model],
                alpha=0.15,
                linewidth=0,
            )
        final.plot(lengths, [task.baseline(t) for t in lengths], "k--", label="trivial")
        if task.metric == task.loss.upper():  # the solved test reads the loss: draw it
            for axes in (final, learning):
                axes.axhline(task.threshold, color="grey", linestyle=":", label="solved below")
        final.set_xscale("log")
        final.set_yscale("log")
        final.set_xticks(lengths, [str(t) for t in lengths])
        final.set_xticks([], minor=True)
        final.set_xlabel(task.length_name)
        final.set_ylabel("held-out loss (" + task.loss.replace("_", " ") + ")")
        final.set_title(f"{task.name}: after training (median over seeds)")
        final.legend(fontsize="small")
        longest = lengths[-1]
        for run in runs:
            if run["length"] != longest:
                continue
            steps = [point["step"] for point in run["history"]]
            losses = [point["loss"] for point in run["history"]]
            learning.plot(steps, losses, color=colours[run["model"]], alpha=0.8, linewidth=1.2)
        learning.axhline(task.baseline(longest), color="k", linestyle="--", linewidth=1)
        learning.set_yscale("log")
        learning.set_xlabel("training steps (a run stops once solved)")
        learning.set_ylabel("held-out loss")
        learning.set_title(f"{task.name}: learning curves at T={longest}, one line per seed")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)

"""``compare``'s results: one row per model and length, the Markdown tables, results.json."""

import json
import os

import numpy as np

from .tasks import TASKS


def summarize(runs):
    """One row per model and length from its runs (one per seed): the median, lowest and
    highest final loss and metric, the seeds that solved the task and the median steps they
    took, and the median ms per training step."""
    groups = {}
    for run in runs:
        groups.setdefault((run["model"], run["length"]), []).append(run)
    rows = []
    for (model, length), group in groups.items():
        losses = [run["loss"] for run in group]
        metrics = [run["metric"] for run in group]
        solved = [run["solved_at_step"] for run in group if run["solved_at_step"] is not None]
        rows.append(
            {
                "model": model,
                "length": length,
                "parameters": group[0]["parameters"],
                "seeds": len(group),
                "solved": len(solved),
                "steps_to_solve": float(np.median(solved)) if solved else None,
                "loss": float(np.median(losses)),
                "min_loss": float(min(losses)),
                "max_loss": float(max(losses)),
                "metric": float(np.median(metrics)),
                "ms_per_step": float(np.median([run["ms_per_step"] for run in group])),
                "cpu_ms_per_step": median_or_none([run.get("cpu_ms_per_step") for run in group]),
            }
        )
    return rows


def median_or_none(values):
    values = [value for value in values if value is not None]
    return float(np.median(values)) if values else None


def format_metric(task, value):
    if task.metric == "MSE":
        return f"{value:.3g}" if value >= 1e-3 else f"{value:.1e}"
    return f"{100 * value:.1f}%"


def format_table(config, rows):
    """The results of one task as a Markdown table: a row per model, a column per length,
    each cell the median final held-out metric over seeds, the seeds that solved the task and
    the median training steps to solve; a last row for the trivial predictor."""
    task = TASKS[config["task"]]
    lengths = sorted({row["length"] for row in rows}) or config["lengths"]
    cells = {(row["model"], row["length"]): row for row in rows}
    models = [m for m in config["variants"] if any((m, t) in cells for t in lengths)]
    header = ["model", "parameters", f"ms/step (T={lengths[-1]})"]
    header += [f"T={t}" for t in lengths]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models:
        known = [cells[model, t] for t in lengths if (model, t) in cells]
        longest = cells.get((model, lengths[-1]))
        line = [model, f"{known[0]['parameters']:,}"]
        line.append(f"{longest['ms_per_step']:.1f}" if longest else "")
        for length in lengths:
            row = cells.get((model, length))
            if row is None:
                line.append("")
                continue
            steps = row["steps_to_solve"]
            solve = f"{row['solved']}/{row['seeds']}" + (f" @ {steps:,.0f}" if steps else "")
            line.append(f"{format_metric(task, row['metric'])} ({solve})")
        lines.append("| " + " | ".join(line) + " |")
    trivial = ["trivial predictor", "", ""]
    trivial += [format_metric(task, task.chance(t)) for t in lengths]
    lines.append("| " + " | ".join(trivial) + " |")
    direction = "<" if task.lower_is_better else ">="
    legend = (
        f"{task.description}, {task.length_name}. Each cell: median held-out {task.metric} "
        f"over seeds at the end of the run (solved, {task.metric} {direction} "
        f"{format_metric(task, task.threshold)}, in k/N seeds @ median training steps to "
        f"solve); {config['units']} units, batch {config['batch_size']}, at most "
        f"{config['steps']:,} steps, Adam {config['learning_rate']}"
        + (", curriculum" if config["curriculum"] else "")
        + "."
    )
    return f"{legend}\n\n" + "\n".join(lines)


def write_results(out, report):
    """results.json (settings, rows, every run) and results.md (a table per task), each
    written to a temporary file first and renamed, so an interruption leaves the last
    complete version."""
    for name, text in (
        ("results.json", json.dumps(report, indent=2)),
        ("results.md", markdown(report) + "\n"),
    ):
        path = os.path.join(out, name)
        with open(path + ".tmp", "w") as file:
            file.write(text)
        os.replace(path + ".tmp", path)


def markdown(report):
    parts = []
    for entry in report["tasks"].values():
        parts.append(
            f"## {entry['settings']['task']}\n\n"
            + format_table(entry["settings"], entry["results"])
        )
    return "\n\n".join(parts)

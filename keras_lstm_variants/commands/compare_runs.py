"""``compare``'s trials: the plan (one trial config per task, model, T and seed), the trial
function that Ray (or this process) runs, and results.json rebuilt from the finished trials."""

import sys

from .report import summarize, write_results
from .training import train_run
from .trials import trial_id


def trial(config):
    """One trial of ``compare`` (run by :func:`run_trials`, in a Ray worker or here)."""
    return train_run(
        config["settings"],
        config["spec"],
        config["length"],
        config["seed"],
        config["out"],
        config["first_seed"],
        verbose=False,
    )


def trial_configs(configs, out):
    """The plan: one trial config per (task, seed, length, model), in the order of the table.
    A trial's settings leave out what does not change its result (the list of models)."""
    plan = []
    for config in configs:
        settings_ = {k: v for k, v in config.items() if k not in ("variants", "preset")}
        for seed in config["seeds"]:
            for length in config["lengths"]:
                for spec in config["variants"]:
                    plan.append(
                        {
                            "settings": settings_,
                            "spec": spec,
                            "length": length,
                            "seed": seed,
                            "out": out,
                            "first_seed": seed == config["seeds"][0],
                        }
                    )
    return plan


def build_report(configs, plan, records):
    """results.json's content from the finished trials' records (in the plan's order)."""
    report = {"tasks": {}, "failed": []}
    for config in configs:
        report["tasks"][config["task"]] = {"settings": config, "results": [], "runs": []}
    for trial_config in plan:
        record = records.get(trial_id(trial_config))
        if record is None:
            continue
        task = trial_config["settings"]["task"]
        if "result" in record:
            run_record = {**record["result"], "node": record.get("node")}
            report["tasks"][task]["runs"].append(run_record)
        else:
            report["failed"].append({**trial_label(trial_config), "error": record["error"]})
    for entry in report["tasks"].values():
        entry["results"] = summarize(entry["runs"])
    return report


def trial_label(trial_config):
    return {
        "task": trial_config["settings"]["task"],
        "model": trial_config["spec"],
        "length": trial_config["length"],
        "seed": trial_config["seed"],
    }


def save(out, report):
    """Write results.json/md; a failing disk is reported on one line, the run goes on."""
    try:
        write_results(out, report)
    except OSError as error:
        print(f"compare: cannot write results to {out}: {error}", file=sys.stderr, flush=True)

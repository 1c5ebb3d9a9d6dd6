"""The statistics of ``keras-lstm-variants study``, after Greff et al. 2017, section V.

Given every finished trial (variant, hyperparameters, final held-out metric, best validation
metric), :func:`analyse` computes, and :func:`write_analysis` writes as ``study.md``,
``study.json`` and PNGs:

* per variant, the distribution of the held-out metric over **all trials** and over the
  **best 10%** (chosen by the validation metric, as Greff et al.'s Fig. 3): n, mean, median,
  quartiles, range; box plots (``study_boxes.png``, :mod:`.study_plots`);
* a **Welch t-test** of each variant's mean against the baseline ``V``'s
  (``scipy.stats.ttest_ind(..., equal_var=False)``, two-sided), on both sets, corrected for the
  ``m`` comparisons (eight with all nine variants). The decision uses **Bonferroni**
  (``p·m < alpha``), the correction Greff et al. used, so the verdicts compare like with like; the
  Holm step-down adjusted p-values (same family-wise error guarantee, never less powerful) are
  reported beside it;
* **hyperparameter importance by fANOVA** (Hutter, Hoos & Leyton-Brown 2014), from Optuna's
  :class:`optuna.importance.FanovaImportanceEvaluator` over an Optuna study built from the
  finished trials (``optuna.trial.create_trial``), pooled over the variants and per variant:
  the fraction of the metric's variance explained by each hyperparameter's main effect,
  normalized to sum 1 (Optuna reports no interaction terms; Greff et al.'s pie charts also had
  a "higher order" share) (``study_importance.png``), and the metric against the learning
  rate per variant (``study_learning_rate.png``);
* the paper's conclusions side by side with what was measured (:data:`PAPER_CONCLUSIONS`).

Metrics are cleaned before the statistics, and the count is reported: a trial whose metric
is not finite (a diverged run) or worse than the task's trivial predictor (``chance``) gets
the trivial predictor's value -- a model can always be replaced by that constant, and one
diverged run's MSE of 1e6 would otherwise dominate every mean.

>>> import numpy as np
>>> from keras_lstm_variants.commands.study_analysis import bonferroni, holm
>>> bonferroni([0.01, 0.02, 0.2])
[0.03, 0.06, 0.6000000000000001]
>>> holm([0.01, 0.02, 0.2])
[0.03, 0.04, 0.2]
"""

import json
import math
import os
import warnings

import numpy as np

#: Greff et al.'s name of the baseline configuration.
BASELINE = "V"
#: (claim, variant or None, expectation) for the side-by-side table; expectation is "worse"
#: (significantly worse than V), "no loss" (not significantly worse), "none better" (no
#: variant significantly better) or "learning_rate" (the top fANOVA importance).
PAPER_CONCLUSIONS = (
    ("No variant is significantly better than V", None, "none better"),
    ("NFG (no forget gate) is significantly worse than V", "NFG", "worse"),
    ("NOAF (no output activation) is significantly worse than V", "NOAF", "worse"),
    ("CIFG (coupled input and forget gate): no significant loss", "CIFG", "no loss"),
    ("NP (no peepholes): no significant loss", "NP", "no loss"),
    ("The learning rate is the most important hyperparameter", None, "learning_rate"),
)
CAVEAT = (
    "Greff et al. measured speech (TIMIT), handwriting (IAM Online) and polyphonic music "
    "(JSB Chorales) with up to 200 trials per variant and data set, trained to convergence with "
    "SGD; this study ran one synthetic task, with the budget, optimizer and trial count given "
    "above. Agreement or disagreement here says how this task behaves, not whether the paper "
    "holds."
)


# ------------------------------------------------------------------------- corrections
def bonferroni(pvalues):
    """Bonferroni-adjusted p-values: ``min(1, p·m)`` for ``m`` tests (NaN stays NaN)."""
    m = len(pvalues)
    return [min(1.0, p * m) if not math.isnan(p) else p for p in pvalues]


def holm(pvalues):
    """Holm's step-down adjusted p-values (Holm 1979): the ``k``-th smallest of ``m`` is
    ``max_{j<=k} min(1, (m - j + 1)·p_(j))``. NaNs are left out of the family and stay NaN."""
    adjusted = [math.nan] * len(pvalues)
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, running = len(order), 0.0
    for rank, (p, index) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


# ----------------------------------------------------------------------------- helpers
def paper_name(label):
    """Greff et al.'s name of a study variant (``"greff:NFG"`` or ``"NFG"`` -> ``"NFG"``),
    or None for a variant outside their nine."""
    head = label.split("+")[0]
    name = head.split(":", 1)[1] if head.lower().startswith("greff:") else head
    names = ("V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR")
    return name.upper() if "+" not in label and name.upper() in names else None


def clean(values, lower_is_better, chance):
    """``values`` with non-finite ones and ones worse than ``chance`` replaced by ``chance``
    (with ``chance=None`` non-finite ones are dropped), and how many were changed."""
    cleaned, changed = [], 0
    for value in values:
        value = float(value)
        if chance is None:
            if math.isfinite(value):
                cleaned.append(value)
            else:
                changed += 1
            continue
        worse = value > chance if lower_is_better else value < chance
        if not math.isfinite(value) or worse:
            value, changed = float(chance), changed + 1
        cleaned.append(value)
    return cleaned, changed


def describe(values):
    array = np.asarray(values, dtype=np.float64)
    if not array.size:
        return {"n": 0}
    q1, median, q3 = np.percentile(array, [25, 50, 75])
    return {
        "n": int(array.size),
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if array.size > 1 else math.nan,
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def best_fraction(trials, fraction, lower_is_better):
    """The best ``ceil(fraction·n)`` of ``trials`` by their validation metric."""
    count = max(1, math.ceil(fraction * len(trials)))
    sign = 1 if lower_is_better else -1

    def key(trial):
        value = float(trial.get("validation", trial["metric"]))
        return sign * value if math.isfinite(value) else math.inf

    return sorted(trials, key=key)[:count]


def welch_tests(groups, baseline, lower_is_better, alpha):
    """Welch's t-test of each group's mean against ``groups[baseline]``, with Bonferroni
    (decision) and Holm adjusted p-values over the ``len(groups) - 1`` comparisons."""
    from scipy import stats

    others = [name for name in groups if name != baseline]
    raw = []
    for name in others:
        a, b = groups[name], groups[baseline]
        if len(a) < 2 or len(b) < 2:
            raw.append((math.nan, math.nan))
            continue
        with warnings.catch_warnings():  # identical values: NaN, reported as untestable
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.ttest_ind(a, b, equal_var=False)
        raw.append((float(result.statistic), float(result.pvalue)))
    pvalues = [p for _, p in raw]
    tests = {}
    for name, (t, p), p_bonf, p_holm in zip(
        others, raw, bonferroni(pvalues), holm(pvalues), strict=True
    ):
        difference = float(np.mean(groups[name]) - np.mean(groups[baseline]))
        better = difference < 0 if lower_is_better else difference > 0
        significant = bool(not math.isnan(p_bonf) and p_bonf < alpha)
        tests[name] = {
            "t": t,
            "p": p,
            "p_bonferroni": p_bonf,
            "p_holm": p_holm,
            "mean_difference": difference,
            "significant": significant,
            "significant_holm": bool(not math.isnan(p_holm) and p_holm < alpha),
            "direction": ("better" if better else "worse") if difference else "equal",
            "testable": not math.isnan(p),
        }
    return tests


def fanova(trials, parameters, lower_is_better, seed=0):
    """Normalized fANOVA main-effect importances ``{parameter: share}`` of ``trials``' cleaned
    metric (key ``"value"``) over ``parameters`` (:meth:`Space.parameters` form), from Optuna's
    FanovaImportanceEvaluator; ``None`` when there are too few trials to fit it."""
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {}
    for name, (kind, low, high, log) in parameters.items():
        if kind == "float":
            distributions[name] = FloatDistribution(low, high, log=log)
        elif kind == "int":
            distributions[name] = IntDistribution(low, high, log=log)
        else:
            distributions[name] = CategoricalDistribution(list(low))
    if len(trials) < 2 or not distributions:
        return None
    study = optuna.create_study(direction="minimize" if lower_is_better else "maximize")
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={name: trial["params"][name] for name in distributions},
                distributions=distributions,
                value=trial["value"],
            )
            for trial in trials
        ]
    )
    if len({trial["value"] for trial in trials}) < 2:
        return None  # no variance to explain
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    importance = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {name: float(share) for name, share in importance.items()}


# ----------------------------------------------------------------------------- analysis
def analyse(
    trials,
    parameters,
    *,
    baseline=None,
    lower_is_better=True,
    chance=None,
    metric_name="metric",
    alpha=0.05,
    top_fraction=0.1,
    seed=0,
):
    """The study's statistics from its finished ``trials``.

    Args:
        trials: dicts with ``variant`` (label), ``params`` (hyperparameters by name),
            ``metric`` (final held-out metric) and ``validation`` (the metric that picks the
            best trials; ``metric`` if absent). Failed trials (``status`` other than ``"ok"``)
            are counted and left out.
        parameters: the searched hyperparameters (:meth:`Space.parameters`).
        baseline: the label tested against; default the variant Greff et al. call ``V``.
        lower_is_better: the metric's direction.
        chance: the trivial predictor's metric (see the module docstring), or None.
        alpha: significance level of the corrected tests.
        top_fraction: share of the best trials (by validation) in the second set.
        seed: fANOVA's random forest seed.

    Returns:
        a JSON-ready dict (see :func:`write_analysis`).
    """
    ok = [dict(t) for t in trials if t.get("status", "ok") == "ok"]
    variants = list(dict.fromkeys(t["variant"] for t in ok))
    if baseline is None:
        baseline = next((v for v in variants if paper_name(v) == BASELINE), None)
    if baseline not in variants:
        raise ValueError(
            f"Argument `baseline`: no finished trial of {baseline!r} (variants: {variants})."
        )
    by_variant = {v: [t for t in ok if t["variant"] == v] for v in variants}
    for t in ok:
        t["value"] = clean([t["metric"]], lower_is_better, chance)[0][0]
    sets = {}
    for name, pick in (
        ("all", lambda group: group),
        ("top", lambda group: best_fraction(group, top_fraction, lower_is_better)),
    ):
        groups, summary, cleaned = {}, {}, 0
        for variant, group in by_variant.items():
            values, changed = clean([t["metric"] for t in pick(group)], lower_is_better, chance)
            groups[variant], cleaned = values, cleaned + changed
            summary[variant] = describe(values)
        sets[name] = {
            "summary": summary,
            "values": groups,
            "cleaned": cleaned,
            "tests": welch_tests(groups, baseline, lower_is_better, alpha),
        }
    importance = {"pooled": fanova(ok, parameters, lower_is_better, seed)}
    for variant, group in by_variant.items():
        importance[variant] = fanova(group, parameters, lower_is_better, seed)
    result = {
        "baseline": baseline,
        "variants": variants,
        "metric": metric_name,
        "lower_is_better": lower_is_better,
        "chance": chance,
        "alpha": alpha,
        "top_fraction": top_fraction,
        "comparisons": len(variants) - 1,
        "correction": "Bonferroni (decision); Holm reported",
        "trials": len(ok),
        "failed": len(trials) - len(ok),
        "parameters": {name: list(spec) for name, spec in parameters.items()},
        "sets": sets,
        "importance": importance,
        "points": [
            {"variant": t["variant"], "params": t["params"], "value": t["value"]} for t in ok
        ],
    }
    result["paper"] = paper_table(result)
    return result


def paper_table(result):
    """Each of :data:`PAPER_CONCLUSIONS` with what the study measured, on all trials and on
    the best trials: ``{claim, measured_all, measured_top, agrees_all, agrees_top}``
    (``agrees`` is None where the study cannot say: variant not run, test not possible)."""
    names = {paper_name(v): v for v in result["variants"] if paper_name(v)}
    rows = []
    for claim, variant, expectation in PAPER_CONCLUSIONS:
        row = {"claim": claim}
        for key in ("all", "top"):
            tests = result["sets"][key]["tests"]
            text, agrees = _verdict(result, tests, names, variant, expectation)
            if key == "top" and expectation == "learning_rate":
                text = "fANOVA reads every trial: as on all trials"
            row[f"measured_{key}"], row[f"agrees_{key}"] = text, agrees
        rows.append(row)
    return rows


def _verdict(result, tests, names, variant, expectation):
    if expectation == "learning_rate":
        pooled = result["importance"]["pooled"]
        if not pooled:
            return "fANOVA not possible (too few trials)", None
        top = max(pooled, key=pooled.get)
        share = pooled.get("learning_rate", 0)
        text = f"most important: {top} ({pooled[top]:.0%}); learning rate {share:.0%}"
        return text, top == "learning_rate"
    if expectation == "none better":
        testable = [v for v, test in tests.items() if test["testable"]]
        if not testable:
            return "no test possible (too few trials)", None
        better = [
            v for v in testable if tests[v]["significant"] and tests[v]["direction"] == "better"
        ]
        if better:
            return "significantly better: " + ", ".join(better), False
        return f"none of {len(testable)} tested is significantly better", True
    label = names.get(variant)
    if label is None or label not in tests:
        return "not run", None
    test = tests[label]
    if not test["testable"]:
        return "no test possible (too few trials)", None
    worse = test["significant"] and test["direction"] == "worse"
    text = (
        f"mean {test['direction']} by {abs(test['mean_difference']):.3g}, "
        f"p = {test['p']:.2g}, Bonferroni p = {test['p_bonferroni']:.2g}"
        + (" (significant)" if test["significant"] else "")
    )
    return text, worse if expectation == "worse" else not worse


# ------------------------------------------------------------------------------ output
def _fmt(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def markdown(result, title="Study"):
    """The analysis as Markdown: summary and tests per set, importances, the paper table."""
    direction = "lower" if result["lower_is_better"] else "higher"
    lines = [
        f"# {title}",
        "",
        f"{result['trials']} finished trials ({result['failed']} failed), "
        f"{len(result['variants'])} variants; held-out {result['metric']} ({direction} is "
        f"better); baseline {result['baseline']}; Welch t-tests, {result['comparisons']} "
        f"comparisons, {result['correction']}, alpha {result['alpha']}.",
    ]
    for key, heading in (
        ("all", "All trials"),
        ("top", f"Best {result['top_fraction']:.0%} of trials (by validation)"),
    ):
        data = result["sets"][key]
        lines += ["", f"## {heading}", ""]
        if data["cleaned"]:
            lines += [
                f"{data['cleaned']} value(s) not finite or worse than the trivial predictor "
                f"({_fmt(result['chance'])}) were set to it.",
                "",
            ]
        lines += [
            "| variant | n | mean | median | q1 | q3 | min | max | difference to "
            f"{result['baseline']} | p | Bonferroni p | Holm p | verdict |",
            "|" + "---|" * 13,
        ]
        for variant in result["variants"]:
            s, test = data["summary"][variant], data["tests"].get(variant)
            cells = [variant, str(s["n"])]
            cells += [_fmt(s.get(k)) for k in ("mean", "median", "q1", "q3", "min", "max")]
            if test is None:
                cells += ["(baseline)", "", "", "", ""]
            else:
                verdict = f"significantly {test['direction']}" if test["significant"] else "n.s."
                if not test["testable"]:
                    verdict = "too few trials"
                cells += [_fmt(test["mean_difference"]), _fmt(test["p"])]
                cells += [_fmt(test["p_bonferroni"]), _fmt(test["p_holm"]), verdict]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Hyperparameter importance (fANOVA, main effects, normalized)", ""]
    names = list(result["parameters"])
    lines += ["| trials | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for key, shares in result["importance"].items():
        row = [key] + ([_percent(shares.get(n)) for n in names] if shares else ["-"] * len(names))
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "## The paper's conclusions against this study",
        "",
        "| Greff et al. 2017 | this study, all trials | agrees | best trials | agrees |",
        "|---|---|---|---|---|",
    ]
    for row in result["paper"]:
        lines.append(
            f"| {row['claim']} | {row['measured_all']} | {_yes(row['agrees_all'])} | "
            f"{row['measured_top']} | {_yes(row['agrees_top'])} |"
        )
    lines += ["", CAVEAT]
    return "\n".join(lines) + "\n"


def _percent(value):
    return "-" if value is None else f"{value:.0%}"


def _yes(value):
    return {True: "yes", False: "no", None: "n/a"}[value]


def write_analysis(result, out, title="Study"):
    """Write ``study.md``, ``study.json``, ``study_boxes.png``, ``study_importance.png`` and
    ``study_learning_rate.png`` under ``out``; returns their paths."""
    os.makedirs(out, exist_ok=True)
    paths = {
        "md": os.path.join(out, "study.md"),
        "json": os.path.join(out, "study.json"),
        "boxes": os.path.join(out, "study_boxes.png"),
        "importance": os.path.join(out, "study_importance.png"),
        "learning_rate": os.path.join(out, "study_learning_rate.png"),
    }
    for key, text in (
        ("md", markdown(result, title)),
        ("json", json.dumps(_plain(result), indent=2, allow_nan=False)),
    ):
        with open(paths[key] + ".tmp", "w") as file:
            file.write(text)
        os.replace(paths[key] + ".tmp", paths[key])
    from .study_plots import plot_boxes, plot_importance, plot_learning_rate

    plot_boxes(result, paths["boxes"])
    plot_learning_rate(result, paths["learning_rate"])
    if any(result["importance"].values()):
        plot_importance(result, paths["importance"])
    else:
        del paths["importance"]
    return paths


def _plain(value):
    """``value`` with NumPy scalars as Python numbers and NaN/inf as None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

"""``keras-lstm-variants study``: the hyperparameter draws, the statistics on synthetic results
of known structure, and the command end to end on tiny trials."""

import json
import math

import numpy as np
import pytest
from helpers import TRIAL_OPTION_REFUSALS, assert_refused

from keras_lstm_variants.commands import cli, study
from keras_lstm_variants.commands import study_analysis as sa
from keras_lstm_variants.commands.study_space import (
    DEFAULT_SPACE,
    GREFF_SGD,
    Space,
    draws,
    noise_scale,
)
from keras_lstm_variants.commands.tasks import TASKS

scipy_stats = pytest.importorskip("scipy.stats")
pytest.importorskip("optuna")  # the examples extra: optuna (fANOVA) and scikit-learn
pytest.importorskip("sklearn")


# ------------------------------------------------------------------------------- draws
def test_draws_are_a_function_of_seed_and_index_only():
    first = draws(4, seed=7)
    assert draws(9, seed=7)[:4] == first  # asking for more keeps the first ones
    assert draws(4, seed=7) == first
    assert draws(4, seed=8) != first
    assert [d["trial"] for d in first] == [0, 1, 2, 3]
    assert len({d["seed"] for d in first}) == 4  # each draw its own training seed
    # The training seed and the shared draws do not depend on the optimizer's space.
    sgd = draws(4, seed=7, space=GREFF_SGD)
    assert [d["seed"] for d in sgd] == [d["seed"] for d in first]
    assert [d["input_noise"] for d in sgd] == [d["input_noise"] for d in first]


def test_draws_follow_their_distributions():
    sample = draws(2000, seed=0)
    rates = np.log10([d["learning_rate"] for d in sample])
    assert rates.min() >= -4 and rates.max() <= -1
    # log-uniform: log10(lr) uniform on [-4, -1]
    assert scipy_stats.kstest((rates + 4) / 3, "uniform").pvalue > 1e-3
    noise = np.array([d["input_noise"] for d in sample])
    assert scipy_stats.kstest(noise, "uniform").pvalue > 1e-3
    units = np.array([d["units"] for d in sample])
    assert units.min() >= 10 and units.max() <= 100
    # log-uniform: as many draws below the geometric middle as above it
    assert abs(np.mean(units < math.sqrt(10 * 100)) - 0.5) < 0.05
    sizes = [d["batch_size"] for d in sample]
    assert set(sizes) == set(DEFAULT_SPACE.batch_sizes)
    assert all(d["momentum"] is None and d["optimizer"] == "adam" for d in sample)


def test_greff_sgd_space():
    sample = draws(2000, seed=1, space=GREFF_SGD)
    rates = np.log10([d["learning_rate"] for d in sample])
    assert rates.min() >= -6 and rates.max() <= -2
    momentum = np.array([d["momentum"] for d in sample])
    assert momentum.min() >= 0 and momentum.max() <= 0.99
    # 1 - momentum is log-uniform on [0.01, 1]: half the draws above 1 - 0.1 = 0.9
    assert abs(np.mean(momentum > 0.9) - 0.5) < 0.05
    units = np.array([d["units"] for d in sample])
    assert units.min() >= 20 and units.max() <= 200
    assert set(GREFF_SGD.parameters()) == {
        "learning_rate",
        "units",
        "input_noise",
        "batch_size",
        "momentum",
    }
    assert "momentum" not in DEFAULT_SPACE.parameters()


def test_constant_ranges_are_not_searched_parameters():
    space = Space(units=(32, 32), batch_sizes=(16,), input_noise=(0, 0))
    assert set(space.parameters()) == {"learning_rate"}
    assert {d["units"] for d in draws(5, space=space)} == {32}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"learning_rate": (0.1, 0.01)}, "learning_rate"),
        ({"learning_rate": (0, 0.01)}, "learning_rate"),
        ({"units": (0, 10)}, "units"),
        ({"input_noise": (-1, 1)}, "input_noise"),
        ({"batch_sizes": ()}, "batch_sizes"),
        ({"batch_sizes": (16, 0)}, "batch_sizes"),
        ({"momentum": (0.01, 2)}, "momentum"),
        ({"units": "big"}, "units"),
    ],
)
def test_bad_space_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        Space(**kwargs)


@pytest.mark.parametrize("count, seed", [(0, 0), (True, 0), (3, -1), (3, 2**32), (2.0, 0)])
def test_bad_draws_name_the_argument(count, seed):
    with pytest.raises(ValueError, match=r"`count`|`seed`"):
        draws(count, seed)


def test_noise_scale_is_the_per_channel_std():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(0, 2, (50, 20)), np.full((50, 20), 3.0)], axis=-1)
    scale = noise_scale(x)
    assert scale[1] == 0
    assert scale[0] == pytest.approx(np.std(x[..., 0]))


# ------------------------------------------------------------------------ corrections
def test_holm_and_bonferroni_against_hand_computed_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, 1*0.04, made monotone
    assert sa.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert sa.bonferroni(p) == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert sa.holm([0.9, 0.2]) == pytest.approx([0.9, 0.4])  # 2*0.2, then max(0.4, 0.9)
    nan = sa.holm([math.nan, 0.02, 0.04])
    assert math.isnan(nan[0]) and nan[1:] == pytest.approx([0.04, 0.04])


# ------------------------------------------------------------------- synthetic studies
NAMES = ["greff:V", "greff:NFG", "greff:NOAF", "greff:CIFG", "greff:NP"]
PARAMETERS = DEFAULT_SPACE.parameters()


def synthetic(n=40, shift=None, metric_of=None, seed=0):
    """Trials of the shared draws: metric = f(hyperparameters) + the variant's shift + noise,
    validation = metric + small noise."""
    rng = np.random.default_rng(seed)
    shift = shift or {}
    trials = []
    for draw in draws(n, seed=seed):
        params = {k: draw[k] for k in PARAMETERS}
        for variant in NAMES:
            base = metric_of(params) if metric_of else 0.05
            metric = base + shift.get(variant, 0.0) + rng.normal(0, 0.005)
            trials.append(
                {
                    "variant": variant,
                    "trial": draw["trial"],
                    "params": params,
                    "metric": metric,
                    "validation": metric + rng.normal(0, 0.001),
                }
            )
    return trials


def welch_oracle(a, b):
    """Welch's t-test written out: t, Welch-Satterthwaite degrees of freedom, two-sided p."""
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, 2 * scipy_stats.t.sf(abs(t), df)


def test_a_clearly_worse_variant_is_significant_and_the_others_are_not():
    trials = synthetic(shift={"greff:NFG": 0.02, "greff:NOAF": 0.03})
    result = sa.analyse(trials, PARAMETERS, chance=1 / 6)
    assert result["baseline"] == "greff:V" and result["comparisons"] == 4
    tests = result["sets"]["all"]["tests"]
    for name in ("greff:NFG", "greff:NOAF"):
        assert tests[name]["significant"] and tests[name]["direction"] == "worse"
    for name in ("greff:CIFG", "greff:NP"):
        assert not tests[name]["significant"]
    values = result["sets"]["all"]["values"]
    for name in NAMES[1:]:
        t, p = welch_oracle(values[name], values["greff:V"])
        assert tests[name]["t"] == pytest.approx(t)
        assert tests[name]["p"] == pytest.approx(p)
        assert tests[name]["p_bonferroni"] == pytest.approx(min(1, 4 * p))
    assert [row["agrees_all"] for row in result["paper"][:5]] == [True] * 5


def test_a_better_variant_contradicts_the_paper():
    result = sa.analyse(synthetic(shift={"greff:CIFG": -0.02}), PARAMETERS, chance=1 / 6)
    test = result["sets"]["all"]["tests"]["greff:CIFG"]
    assert test["significant"] and test["direction"] == "better"
    first = result["paper"][0]
    assert first["agrees_all"] is False and "greff:CIFG" in first["measured_all"]
    # NFG and NOAF are not worse here: those claims are not reproduced
    assert [row["agrees_all"] for row in result["paper"][1:3]] == [False, False]


def test_a_parameter_that_determines_the_metric_gets_the_top_importance():
    def by_rate(params):  # only the learning rate matters
        return 0.02 * (math.log10(params["learning_rate"]) + 4)

    result = sa.analyse(synthetic(n=60, metric_of=by_rate), PARAMETERS, chance=1 / 6)
    pooled = result["importance"]["pooled"]
    assert max(pooled, key=pooled.get) == "learning_rate" and pooled["learning_rate"] > 0.8
    assert result["paper"][-1]["agrees_all"] is True

    def by_units(params):
        return 0.001 * params["units"]

    result = sa.analyse(synthetic(n=60, metric_of=by_units), PARAMETERS, chance=1 / 6)
    pooled = result["importance"]["pooled"]
    assert max(pooled, key=pooled.get) == "units"
    assert result["paper"][-1]["agrees_all"] is False
    for name in NAMES:  # per variant too
        shares = result["importance"][name]
        assert max(shares, key=shares.get) == "units"


def test_best_trials_are_chosen_by_validation_not_by_the_test_metric():
    trials = []
    for i in range(20):
        for variant in ("V", "NP"):
            # validation says trial 0 and 1 are best; their test metrics are the worst
            trials.append(
                {
                    "variant": variant,
                    "trial": i,
                    "params": {"learning_rate": 10 ** (-4 + 3 * i / 19)},
                    "metric": 0.1 if i < 2 else 0.01 + 0.001 * i,
                    "validation": 0.001 * i,
                }
            )
    parameters = {"learning_rate": PARAMETERS["learning_rate"]}
    result = sa.analyse(trials, parameters, chance=1 / 6)
    assert result["baseline"] == "V"
    top = result["sets"]["top"]["values"]
    assert top["V"] == [0.1, 0.1] and top["NP"] == [0.1, 0.1]
    assert result["sets"]["all"]["summary"]["V"]["n"] == 20


def test_diverged_and_worse_than_trivial_metrics_are_set_to_the_trivial_predictor():
    trials = synthetic(n=10)
    trials[0]["metric"], trials[1]["metric"], trials[2]["metric"] = math.nan, 1e6, math.inf
    trials.append({**trials[3], "status": "failed"})
    result = sa.analyse(trials, PARAMETERS, chance=1 / 6)
    assert result["sets"]["all"]["cleaned"] == 3 and result["failed"] == 1
    values = result["sets"]["all"]["values"]
    assert max(max(v) for v in values.values()) == pytest.approx(1 / 6)
    # higher is better (accuracy): below chance is set to chance
    assert sa.clean([0.3, 0.9, math.nan], lower_is_better=False, chance=0.5) == ([0.5, 0.9, 0.5], 2)


def test_too_few_trials_say_so_instead_of_testing():
    result = sa.analyse(synthetic(n=4), PARAMETERS, chance=1 / 6)
    top = result["sets"]["top"]
    assert all(s["n"] == 1 for s in top["summary"].values())
    assert not any(test["testable"] for test in top["tests"].values())
    assert all(row["agrees_top"] is None for row in result["paper"][:5])
    assert "too few trials" in sa.markdown(result)


def test_missing_baseline_and_unrun_variants():
    trials = [t for t in synthetic(n=6) if t["variant"] != "greff:V"]
    with pytest.raises(ValueError, match="`baseline`"):
        sa.analyse(trials, PARAMETERS)
    only = [t for t in synthetic(n=6) if t["variant"] in ("greff:V", "greff:NP")]
    result = sa.analyse(only, PARAMETERS, chance=1 / 6)
    claims = {row["claim"].split()[0]: row for row in result["paper"]}
    assert claims["NFG"]["measured_all"] == "not run" and claims["NFG"]["agrees_all"] is None


def test_paper_names():
    assert sa.paper_name("greff:NFG") == "NFG"
    assert sa.paper_name("greff:cifg") == "CIFG"
    assert sa.paper_name("NP") == "NP"
    assert sa.paper_name("lstm") is None
    assert sa.paper_name("greff:NP+layer_norm") is None


def test_write_analysis(tmp_path):
    result = sa.analyse(synthetic(n=12, shift={"greff:NFG": 0.03}), PARAMETERS, chance=1 / 6)
    paths = sa.write_analysis(result, tmp_path, title="Synthetic")
    data = json.loads((tmp_path / "study.json").read_text())  # strict: no NaN
    assert data["sets"]["all"]["tests"]["greff:NFG"]["significant"] is True
    text = (tmp_path / "study.md").read_text()
    assert text.startswith("# Synthetic") and sa.CAVEAT in text
    assert "| greff:NFG | 12 |" in text and "significantly worse" in text
    for key in ("boxes", "importance", "learning_rate"):
        with open(paths[key], "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------- the command
#: Tiny trials: T = 5, 10 steps, 3-5 units.
TINY = ["--lengths", "5", "--steps", "10", "--eval-every", "5", "--units-range", "3,5"]
TINY += ["--batch-sizes", "4,8"]
#: ... run one after another in the test's process (Ray's own runs: test_study_on_ray).
INLINE = [*TINY, "--in-process"]


def tiny_config(variant="greff:V", trial=0, **draw_changes):
    config = {
        "task": "adding",
        "lengths": [5],
        "variants": [variant],
        "trials": trial + 1,
        "steps": 10,
        "eval_every": 5,
        "seed": 0,
        "space": {**vars(Space(units=(3, 5), batch_sizes=(4, 8))), "batch_sizes": [4, 8]},
    }
    config["space"] = {
        k: list(v) if isinstance(v, tuple) else v for k, v in config["space"].items()
    }
    trial_config = study.trial_configs(config)[trial]
    trial_config["draw"].update(draw_changes)
    return trial_config


def test_a_trial_is_deterministic_and_keeps_its_best_validation():
    config = tiny_config(learning_rate=0.05)
    first, second = study.run_trial(config), study.run_trial(config)
    for key in ("metric", "loss", "validation", "best_step", "history", "params", "parameters"):
        assert first[key] == second[key], key
    history = first["history"]
    assert [point["step"] for point in history] == [5, 10]
    best = min(history, key=lambda point: point["metric"])
    assert first["validation"] == best["metric"] and first["best_step"] == best["step"]
    assert first["final_validation"] == history[-1]["metric"]
    assert first["status"] == "ok" and math.isfinite(first["metric"])
    # the test set is another sample than the validation set: not the same score
    assert first["metric"] != first["validation"]


def test_sgd_trial_and_a_diverging_trial():
    sgd = study.run_trial(tiny_config(optimizer="sgd", momentum=0.9, learning_rate=1e-3))
    assert sgd["status"] == "ok" and sgd["params"]["momentum"] == 0.9
    diverged = study.run_trial(tiny_config(learning_rate=1e12))
    assert diverged["status"] == "ok" and diverged["metric"] > 1e6  # cleaned by the analysis


def test_best_validation_stops_at_a_non_finite_score_and_keeps_no_weights():
    import keras

    task = TASKS["adding"]
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.GRU(2), keras.layers.Dense(1)])
    callback = study.BestValidation(task, task.data(5, 8, seed=0), eval_every=5)
    callback.set_model(model)
    callback.on_epoch_end(0)
    assert callback.best_step == 5 and callback.best_weights is not None
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    callback.on_epoch_end(1)
    assert model.stop_training and callback.best_step == 5  # the NaN step is not the best
    assert math.isnan(callback.history[-1]["metric"])


def test_noisy_batches_add_noise_of_the_drawn_scale_to_training_batches_only():
    task = TASKS["adding"]
    clean = study.NoisyBatches(task, 20, 64, 5, seed=3, scale=[0.0, 0.0])
    noisy = study.NoisyBatches(task, 20, 64, 5, seed=3, scale=[0.5, 0.0])
    x0, y0 = clean[2]
    x1, y1 = noisy[2]
    assert np.array_equal(y0, y1) and np.array_equal(x0[..., 1], x1[..., 1])
    difference = x1[..., 0] - x0[..., 0]
    assert difference.std() == pytest.approx(0.5, rel=0.05) and abs(difference.mean()) < 0.02
    assert np.array_equal(noisy[2][0], x1)  # the same step gives the same noise


def test_a_failed_record_is_a_failed_trial_of_its_variant():
    config = tiny_config(variant="greff:NFG")
    failed = study.result_of({"id": "x", "config": config, "error": "OSError: disk full"})
    assert failed["status"] == "failed" and failed["variant"] == "greff:NFG"
    assert failed["length"] == 5 and failed["error"] == "OSError: disk full"
    ok = {"status": "ok", "metric": 0.1}
    assert study.result_of({"id": "x", "config": config, "result": ok}) is ok


def test_the_command_end_to_end_resumes_and_extends(tmp_path, capsys):
    out = tmp_path / "out"
    command = ["study", "--variants", "greff:V,greff:NFG", *INLINE, "--out", str(out)]
    assert cli.main([*command, "--trials", "2"]) == 0
    printed = capsys.readouterr().out
    assert "[4 new] adding-T5/greff:NFG trial 1" in printed
    lines = (out / "trials.jsonl").read_text().splitlines()
    records = [json.loads(line)["result"] for line in lines]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    by_trial = {}
    for record in records:  # every variant trained on the same draws
        by_trial.setdefault(record["trial"], []).append((record["params"], record["seed"]))
    assert all(len(v) == 2 and v[0] == v[1] for v in by_trial.values())
    analysis = json.loads((out / "adding-T5" / "study.json").read_text())
    assert analysis["trials"] == 4 and analysis["baseline"] == "greff:V"
    assert (out / "adding-T5" / "study_boxes.png").exists()
    assert "# Study: Adding problem" in printed
    # more trials: the two finished draws are kept, the third runs for both variants
    assert cli.main([*command, "--trials", "3"]) == 0
    printed = capsys.readouterr().out
    assert "[2 new] adding-T5/greff:NFG trial 2" in printed and "[3 new]" not in printed
    assert "4 of 6 trials were already in" in printed
    assert (out / "trials.jsonl").read_text().splitlines()[:4] == lines
    assert json.loads((out / "adding-T5" / "study.json").read_text())["trials"] == 6
    # other settings into the same --out: their own trials, analysed alone
    assert cli.main([*command, "--trials", "1", "--steps", "5"]) == 0
    printed = capsys.readouterr().out
    assert "[2 new]" in printed and "already in" not in printed
    assert json.loads((out / "adding-T5" / "study.json").read_text())["trials"] == 2


@pytest.mark.parametrize(
    "arguments, option",
    [
        (["--task", "nope"], "--task"),
        (["--trials", "0"], "--trials"),
        (["--steps", "12"], "--steps"),
        (["--variants", "greff:V"], "--variants"),
        (["--variants", "greff:V,simplernn"], "--variants"),
        (["--variants", "greff:XYZ,greff:V"], "--variants"),
        (["--lengths", "1"], "--lengths"),
        (["--learning-rate-range", "0.1"], "--learning-rate-range"),
        (["--units-range", "10,5"], "units"),
        (["--batch-sizes", "a,b"], "--batch-sizes"),
        (["--alpha", "2"], "--alpha"),
        (["--seed", "-1"], "--seed"),
        *TRIAL_OPTION_REFUSALS,
        (["--address", "127.0.0.1:1"], "--address 127.0.0.1:1"),
        # num_heads must divide every drawn size: 4 heads do not divide 3 or 5 units
        (["--variants", "slstm+num_heads=4,slstm"], "slstm+num_heads=4"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(arguments, option, capsys, tmp_path):
    command = ["study", "--variants", "greff:V,greff:NP", *TINY, "--out", str(tmp_path)]
    assert_refused([*command, *arguments], option, capsys)
    assert not (tmp_path / "trials").exists()


def test_study_on_ray_equals_the_trials_in_process(tmp_path, capsys):
    """The default engine, an embedded Ray: its workers import the trial by name and give the
    in-process trial's results (both at one thread per trial)."""
    pytest.importorskip("ray")
    command = ["study", "--variants", "greff:V,greff:CIFG", "--trials", "1", *TINY]
    assert cli.main([*command, "--out", str(tmp_path / "ray")]) == 0
    assert cli.main([*command, "--in-process", "--out", str(tmp_path / "inline")]) == 0
    capsys.readouterr()

    def records(name):
        text = (tmp_path / name / "trials.jsonl").read_text()
        return {r["config"]["variant"]: r for r in map(json.loads, text.splitlines())}

    on_ray, inline = records("ray"), records("inline")
    assert set(on_ray) == {"greff:V", "greff:CIFG"}
    for variant, record in on_ray.items():
        assert record["pid"] != inline[variant]["pid"]  # another process ran it
        ray_result, inline_result = record["result"], inline[variant]["result"]
        assert ray_result["history"] == pytest.approx(inline_result["history"], rel=1e-5)
        assert ray_result["metric"] == pytest.approx(inline_result["metric"], rel=1e-5)


def test_the_command_line_space():
    parser = cli.build_parser()
    args = parser.parse_args(["study", "--optimizer", "sgd"])
    assert study.space_from(args) == GREFF_SGD  # the paper's optimizer and ranges
    args = parser.parse_args(
        [
            "study",
            "--optimizer",
            "sgd",
            "--units-range",
            "4,8",
            "--batch-sizes",
            "16",
            "--noise-range",
            "0,0.5",
            "--learning-rate-range",
            "1e-3,1e-2",
        ]
    )
    space = study.space_from(args)
    assert (space.units, space.batch_sizes, space.input_noise) == ((4, 8), (16,), (0, 0.5))
    assert space.learning_rate == (1e-3, 1e-2) and space.optimizer == "sgd"
    assert study.space_from(parser.parse_args(["study"])) == DEFAULT_SPACE

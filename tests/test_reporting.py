"""Reporting: results.json -> summary.csv, report.md (table and generated findings) and PNGs.

The fixture ``fixtures/results_small.json`` is written by :func:`build_results` below
(``python tests/test_reporting.py`` rewrites it): 3 schedules x 2 seeds; constant seed 1 never
reaches the threshold, cosine seed 1 diverges (NaN and null values). The expected numbers in the
tests are worked out by hand from the literal values in :func:`build_results`.
"""

import copy
import csv
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from hf_metalr.reporting import ResultsError, aggregate, load_results, write_report
from hf_metalr.reporting.aggregate import number
from hf_metalr.reporting.cli import main as report_main
from hf_metalr.reporting.markdown import findings, render_markdown

FIXTURE = Path(__file__).parent / "fixtures" / "results_small.json"
NAN = float("nan")
STEPS_PER_EPOCH, EVAL_EVERY = 10, 5


# ------------------------------------------------------------------ what a generated sentence states

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?:/\d+)?")


def bold(text: str) -> list[str]:
    """The schedules a finding puts in bold, in order: the one it names best first."""
    return re.findall(r"\*\*([\w-]+)\*\*", text)


def quotes(text: str, numbers: str) -> bool:
    """Whether ``text`` quotes every number of ``numbers`` (space-separated, as the report writes them,
    e.g. ``1/2 -0.020 3.75e-04``), each as many times as it is listed, whatever the wording around them."""
    found = Counter(_NUMBER.findall(text))
    return not Counter(numbers.split()) - found


def names(text: str, *terms: str) -> bool:
    return all(term in text for term in terms)


# ------------------------------------------------------------------ the fixture


def _run(schedule, seed, accs, seconds_per_eval, lr_at_step, reached_at, test, best_val_loss, stability, status="ok"):
    """One run; ``accs`` per eval (None/NaN allowed), LR from ``lr_at_step(step)``, threshold reached at eval ``reached_at``."""
    evals = []
    for i, acc in enumerate(accs, start=1):
        step = i * EVAL_EVERY
        a = number(acc)
        evals.append({
            "step": step, "epoch": step / STEPS_PER_EPOCH, "seconds": round(i * seconds_per_eval, 4),
            "eval_loss": round(2 * (1 - a), 4) if not math.isnan(a) else NAN,
            "eval_accuracy": acc, "eval_macro_f1": round(a - 0.01, 4) if not math.isnan(a) else None,
        })
    last_step = len(accs) * EVAL_EVERY
    lr_curve = [[s, s / STEPS_PER_EPOCH, lr_at_step(s)] for s in range(1, last_step + 1)]
    train_loss = [[e["step"], e["epoch"], e["eval_loss"]] for e in evals]
    if status == "diverged":
        lr_curve.append([last_step + 1, (last_step + 1) / STEPS_PER_EPOCH, NAN])
    threshold = {"reached": False, "evals": None, "epoch": None, "seconds": None, "step": None}
    if reached_at:
        e = evals[reached_at - 1]
        threshold = {"reached": True, "evals": reached_at, "epoch": e["epoch"], "seconds": e["seconds"], "step": e["step"]}
    std, changes, lo, hi = stability
    return {
        "schedule": schedule, "seed": seed, "status": status, "wall_seconds": round(len(accs) * seconds_per_eval + 1.0, 4),
        "evals": evals, "lr_curve": lr_curve, "train_loss": train_loss, "threshold": threshold, "test": test,
        "best_val_loss": best_val_loss,
        "lr_stability": {"std_dlog_lr": std, "direction_changes": changes, "lr_min": lo, "lr_max": hi},
    }


def _stepwise(factors):
    """An LR that starts at 1e-3 and is multiplied by ``factors[k]`` after eval k+1 (what metalr does)."""
    def lr(step):
        value = 1e-3
        for k, f in enumerate(factors):
            if step > (k + 1) * EVAL_EVERY:
                value *= f
        return value
    return lr


def _cosine(step):
    return 0.5 * (1 + math.cos(math.pi * (step - 1) / 30)) * 1e-3


def build_results() -> dict:
    config = {
        "task": "digits", "task_description": "8x8 handwritten digits (scikit-learn), small MLP.",
        "metric": "accuracy", "greater_is_better": True, "threshold": 0.9, "test_metrics": ["accuracy", "macro_f1"],
        "schedules": ["metalr", "constant", "cosine"], "seeds": [0, 1], "lr": 0.001, "epochs": 3,
        "batch_size": 32, "evals_per_epoch": 2, "hf_metalr_version": "0.1.0", "metalr_policy": "random",
    }
    const = lambda step: 1e-3  # noqa: E731
    runs = [
        _run("metalr", 0, [0.70, 0.85, 0.91, 0.93, 0.94, 0.95], 1.5, _stepwise([2, 2, 0.5, 0.5, 0.5]), 3,
             {"accuracy": 0.95, "macro_f1": 0.94}, 0.20, (0.30, 3, 5e-4, 4e-3)),
        _run("metalr", 1, [0.65, 0.80, 0.86, 0.89, 0.905, 0.92], 1.5, _stepwise([2, 0.5, 0.5, 0.5, 2]), 5,
             {"accuracy": 0.93, "macro_f1": 0.92}, 0.26, (0.50, 5, 2.5e-4, 2e-3)),
        _run("constant", 0, [0.72, 0.84, 0.88, 0.91, 0.92, 0.93], 1.4, const, 4,
             {"accuracy": 0.94, "macro_f1": 0.935}, 0.22, (0.0, 0, 1e-3, 1e-3)),
        _run("constant", 1, [0.70, 0.80, 0.85, 0.87, 0.88, 0.88], 1.4, const, None,
             {"accuracy": 0.89, "macro_f1": 0.875}, 0.35, (0.0, 0, 1e-3, 1e-3)),
        _run("cosine", 0, [0.75, 0.87, 0.92, 0.94, 0.95, 0.955], 1.4, _cosine, 3,
             {"accuracy": 0.96, "macro_f1": 0.955}, 0.18, (0.05, 0, 2.7e-6, 1e-3)),
        _run("cosine", 1, [0.74, 0.60, None], 1.4, _cosine, None,
             {"accuracy": NAN, "macro_f1": None}, 0.9, (NAN, None, 5.5e-4, 1e-3), status="diverged"),
    ]
    return {"format": 1, "config": config, "runs": runs}


def _fixture_text() -> str:
    return json.dumps(build_results(), indent=1) + "\n"


@pytest.fixture
def results():
    return load_results(FIXTURE)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    (out / "results.json").write_text(FIXTURE.read_text())
    path = write_report(out)
    assert path == out / "report.md"
    return out


def _write(tmp_path, results) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path


# ------------------------------------------------------------------ the fixture itself


def test_fixture_is_what_the_generator_writes_and_holds_nan_and_null():
    text = FIXTURE.read_text()
    assert text == _fixture_text(), "fixture drifted: regenerate with python tests/test_reporting.py"
    assert "NaN" in text and "null" in text
    assert math.isnan(json.loads(text)["runs"][5]["test"]["accuracy"])


def test_number_treats_null_nan_inf_and_junk_as_missing():
    assert [number(v) for v in (1, 0.5, "2.5")] == [1.0, 0.5, 2.5]
    assert all(math.isnan(number(v)) for v in (None, NAN, float("inf"), "nan", "abc", [], True))


# ------------------------------------------------------------------ aggregates and csv


def test_aggregate_medians_min_max_and_counts(results):
    summary = aggregate(results)
    assert [s.schedule for s in summary.schedules] == ["metalr", "constant", "cosine"]
    got = {s.schedule: (s.n, s.reached, s.diverged) for s in summary.schedules}
    assert got == {"metalr": (2, 2, 0), "constant": (2, 1, 0), "cosine": (2, 1, 1)}
    metalr, constant, cosine = summary.schedules
    st = metalr.stats["evals_to_threshold"]
    assert (st.median, st.min, st.max, st.n) == (4, 3, 5, 2)
    assert metalr.stats["seconds_to_threshold"].median == pytest.approx(6.0)
    # only the reaching run counts for the threshold measures, all runs for the rest
    assert constant.stats["evals_to_threshold"].n == 1 and constant.median("evals_to_threshold") == 4
    assert constant.median("test_accuracy") == pytest.approx(0.915)
    # the diverged cosine run: NaN accuracy, null macro_f1, NaN std, null changes drop out; its 0.9 val loss stays
    assert cosine.stats["test_accuracy"].n == 1 and cosine.median("test_accuracy") == pytest.approx(0.96)
    assert cosine.stats["test_macro_f1"].n == 1
    assert cosine.stats["std_dlog_lr"].n == 1 and cosine.stats["direction_changes"].n == 1
    assert cosine.median("best_val_loss") == pytest.approx(0.54)
    assert cosine.median("lr_min") == pytest.approx((2.7e-6 + 5.5e-4) / 2)


def test_median_over_three_seeds_is_the_middle_value_not_the_mean(results):
    extra = copy.deepcopy(results["runs"][1])
    extra["seed"] = 2
    extra["threshold"].update(evals=10, seconds=15.0)
    extra["test"]["accuracy"] = 0.50
    results["runs"].append(extra)
    metalr = aggregate(results).get("metalr")
    assert (metalr.n, metalr.reached) == (3, 3)
    st = metalr.stats["evals_to_threshold"]
    assert (st.median, st.min, st.max) == (5, 3, 10)
    assert metalr.median("seconds_to_threshold") == 7.5
    assert metalr.median("test_accuracy") == 0.93


def test_summary_csv_has_one_row_per_schedule_with_medians(report_dir):
    with (report_dir / "summary.csv").open() as f:
        rows = {r["schedule"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["metalr", "constant", "cosine"]
    m, c, k = rows["metalr"], rows["constant"], rows["cosine"]
    assert (m["n"], m["reached"], m["diverged"]) == ("2", "2", "0")
    assert (k["n"], k["reached"], k["diverged"]) == ("2", "1", "1")
    assert (m["evals_to_threshold_median"], m["evals_to_threshold_min"], m["evals_to_threshold_max"]) == ("4", "3", "5")
    assert float(m["seconds_to_threshold_median"]) == pytest.approx(6.0)
    assert float(m["test_accuracy_median"]) == pytest.approx(0.94)
    assert float(c["test_macro_f1_median"]) == pytest.approx(0.905)
    assert float(c["best_val_loss_median"]) == pytest.approx(0.285)
    assert (c["evals_to_threshold_min"], c["evals_to_threshold_max"]) == ("4", "4")
    assert float(k["best_val_loss_median"]) == pytest.approx(0.54)
    assert float(k["std_dlog_lr_median"]) == pytest.approx(0.05)
    assert float(m["lr_max_median"]) == pytest.approx(3e-3)


# ------------------------------------------------------------------ report.md


def test_report_md_has_title_config_table_rows_and_plot_links(report_dir):
    md = (report_dir / "report.md").read_text()
    assert md.startswith("# hf_metalr compare: digits\n")
    assert ("**Task** digits · **schedules** metalr, constant, cosine · **seeds** 0, 1 · **LR** 0.001 · "
            "**epochs** 3 · **threshold** eval_accuracy ≥ 0.9") in md
    assert ("| metalr | 2/2 | 4 [3–5] | 2.00 [1.50–2.50] | 6.0 [4.5–7.5] | 0.940 [0.930–0.950] | 0.930 [0.920–0.940] "
            "| 0.230 [0.200–0.260] | 0.400 [0.300–0.500] | 4 [3–5] | 3.75e-04 [2.50e-04–5.00e-04] "
            "| 3.00e-03 [2.00e-03–4.00e-03] | 0 |") in md
    assert ("| constant | 1/2 | 4 [4–4] | 2.00 [2.00–2.00] | 5.6 [5.6–5.6] | 0.915 [0.890–0.940] | 0.905 [0.875–0.935] "
            "| 0.285 [0.220–0.350] | 0.000 [0.000–0.000] | 0 [0–0] | 1.00e-03 [1.00e-03–1.00e-03] "
            "| 1.00e-03 [1.00e-03–1.00e-03] | 0 |") in md
    assert ("| cosine | 1/2 | 3 [3–3] | 1.50 [1.50–1.50] | 4.2 [4.2–4.2] | 0.960 [0.960–0.960] | 0.955 [0.955–0.955] "
            "| 0.540 [0.180–0.900] | 0.050 [0.050–0.050] | 0 [0–0] | 2.76e-04 [2.70e-06–5.50e-04] "
            "| 1.00e-03 [1.00e-03–1.00e-03] | 1 |") in md
    assert re.search(r"Diverged runs: cosine seed 1\b", md) and "Missing runs" not in md
    for png in ("lr_curve.png", "val_metric.png", "time_to_threshold.png"):
        assert f"]({png})" in md


def test_findings_state_the_fixture_numbers(results):
    first, versus, lost, stability = findings(aggregate(results))
    # a run that never reached the threshold counts as never: cosine (3 evals, seed 1 diverged) and constant (4,
    # seed 1 never) have medians of never over their 2 runs; metalr's are 4 evals (3, 5), epoch 2.00, 6.0 s, 2/2 runs
    assert bold(first) == ["metalr"] and names(first, "eval_accuracy", "never")
    assert quotes(first, "0.9 4 2.00 6.0 2/2 1/2 1/2") and names(first, "constant 1/2", "cosine 1/2")
    # against the best baseline, cosine (no baseline's median run reached the threshold: the highest test accuracy):
    # test accuracy 0.940 vs 0.960 (-0.020), macro_f1 0.930 vs 0.955 (-0.025)
    assert bold(versus) == ["cosine"] and names(versus, "metalr", "highest test accuracy", "macro_f1")
    assert quotes(versus, "2/2 4 0.940 0.960 -0.020 0.930 0.955 -0.025")
    # behind on the 2 test metrics (against cosine), best or tied best on the other 6 of 8
    assert quotes(lost, "2 8 0.940 0.960 0.930 0.955 2/2 4 2.00 6.0 0.230 0/2")
    behind, _, best = lost.partition("best or tied best")
    assert names(behind, "test accuracy", "test macro_f1", "cosine")
    assert names(best, "evals to threshold", "epochs to threshold", "seconds to threshold", "runs reaching the threshold",
                 "best val loss", "diverged runs")
    # the LR stability of metalr (3 schedules; std 0.400, 4 changes, LR 3.75e-04 to 3.00e-03, 8.00x cosine's std),
    # then cosine (0.050) and the steadiest, constant (0.000, 0 changes), ranked most to least variable
    assert quotes(stability, "3 0.400 4 3.75e-04 3.00e-03 8.00 0.050 0.000 0")
    assert stability.index("metalr") < stability.index("0.050") < stability.index("constant")


def test_findings_are_honest_when_metalr_never_reaches_the_threshold(results):
    for run in results["runs"]:
        if run["schedule"] == "metalr":
            run["threshold"] = {"reached": False, "evals": None, "epoch": None, "seconds": None, "step": None}
            run["test"] = {"accuracy": 0.80, "macro_f1": None}
    first, versus, lost, _ = findings(aggregate(results))
    # no schedule's median run reached it; those with some runs that did are named, metalr (0/2) is not
    assert not bold(first) and names(first, "No schedule's median run", "constant 1/2", "cosine 1/2")
    assert "metalr" not in first
    assert bold(versus) == ["cosine"] and quotes(versus, "0.800 0.960 -0.160 0.955") and names(versus, "neither")
    assert "n/a" in versus, "metalr's missing macro_f1 is said to be missing, not made up"
    # the threshold measures are not judged when no median run reached it: 3 of the other 5 are lost
    assert quotes(lost, "3 5 0/2 1/2 0.800 0.960 0.955") and names(lost, "n/a", "worst of 3")
    assert not names(lost, "evals to threshold")


def test_findings_when_metalr_wins_everything(results):
    for run in results["runs"]:
        if run["schedule"] == "metalr":
            run["threshold"].update(evals=2, epoch=1.0, seconds=3.0)
            run["test"] = {"accuracy": 0.99, "macro_f1": 0.99}
            run["best_val_loss"] = 0.1
    first, versus, lost, _ = findings(aggregate(results))
    assert bold(first) == ["metalr"] and quotes(first, "2 1.00 3.0 2/2 1/2 1/2")
    assert bold(versus) == ["cosine"] and quotes(versus, "2/2 2 0.990 0.960 +0.030 0.990 0.955 +0.035")
    # behind on none of the 8 judged measures: no other schedule is named as ahead of it
    assert quotes(lost, "8") and not bold(lost) and not names(lost, "cosine") and not names(lost, "constant")


def _reach(run, evals, seconds):
    run["threshold"] = {"reached": True, "evals": evals, "epoch": evals * EVAL_EVERY / STEPS_PER_EPOCH,
                        "seconds": seconds, "step": evals * EVAL_EVERY}


def _miss(run):
    run["threshold"] = {"reached": False, "evals": None, "epoch": None, "seconds": None, "step": None}


def test_seconds_ratios_use_the_unrounded_medians_and_level_baselines_are_not_ranked(results):
    runs = {(r["schedule"], r["seed"]): r for r in results["runs"]}
    # sub-second runs, as on digits: metalr 0.3094 s against constant 0.2298 s print as 0.3 and 0.2
    for seed in (0, 1):
        _reach(runs["metalr", seed], 4, 0.3094)
        _reach(runs["constant", seed], 5, 0.2298)
    for run in results["runs"]:
        run["lr_stability"]["std_dlog_lr"] = 0.3 if run["schedule"] == "metalr" else 0.0
        run["lr_stability"]["direction_changes"] = 1 if run["schedule"] == "metalr" else 0
    _, versus, _, stability = findings(aggregate(results))
    assert names(versus, "1.35× the seconds (0.3 vs 0.2)"), "not 0.3 / 0.2 = 1.50"
    assert "the most variable baseline" not in stability, "no baseline moved its LR: none is the most variable"
    assert names(stability, "the baselines were level (", "1 direction change,")


def test_the_ranking_counts_a_run_that_never_reached_as_never(results):
    runs = {(r["schedule"], r["seed"]): r for r in results["runs"]}
    # constant seed 1 now reaches at eval 6 (8.4 s): constant's medians over its 2 runs are 5 evals (4, 6), epoch
    # 2.50, 7.0 s (5.6, 8.4); metalr's 4 (3, 5), 2.00, 6.0 s: metalr first, 1 eval fewer, 0.80x the evals, 0.86x
    # the seconds; cosine (1/2, its seed 1 diverged) is not ranked
    _reach(runs["constant", 1], 6, 8.4)
    first, versus, lost, _ = findings(aggregate(results))
    assert bold(first) == ["metalr", "constant"] and quotes(first, "4 2.00 6.0 2/2 5 7.0 2/2 1 0.80 0.86")
    # the best baseline is the fastest, constant; test accuracy 0.940 vs 0.915 (0.94, 0.89), macro_f1 0.930 vs 0.905
    assert bold(versus) == ["constant"] and quotes(versus, "0.80 4 5 0.86 6.0 7.0 2/2 2/2 0.940 0.915 +0.025")

    # metalr reaches in 1 of 2 runs, at eval 3, sooner than anyone: its median run never reached it, and constant,
    # which reached it in both, is first (the helper's case: 1/3 at eval 3 had been called first against 3/3 at 5)
    _miss(runs["metalr", 1])
    first, versus, lost, _ = findings(aggregate(results))
    assert bold(first) == ["constant"] and names(first, "No other schedule's median run", "metalr 1/2")
    assert quotes(first, "5 2.50 7.0 2/2")
    assert bold(versus) == ["constant"] and names(versus, "metalr's median run never reached the threshold")
    assert names(lost, "evals to threshold (never reached vs 5 for constant")

    # numbers that print alike are a tie: metalr at evals (4, 6) in 5.6 and 8.48 s has medians 5 evals and 7.04 s,
    # which prints as constant's 7.0; the LR's std of 0.0001 against 0 prints as 0.000 too
    _reach(runs["metalr", 0], 4, 5.6)
    _reach(runs["metalr", 1], 6, 8.48)
    for run in results["runs"]:
        run["lr_stability"]["std_dlog_lr"] = 0.0001 if run["schedule"] == "metalr" else 0.0
    first, versus, lost, stability = findings(aggregate(results))
    assert bold(first) == ["metalr", "constant"] and names(first, "tied with it on both evals and seconds")
    behind, _, best = lost.partition("best or tied best")
    assert names(versus, "1.00× the evals", "1.01× the seconds (7.0 vs 7.0)"), "the ratio of the unrounded seconds"
    assert names(best, "seconds to threshold (7.0)")
    assert not names(behind, "seconds to threshold")
    assert stability.startswith("LR stability: all 3 schedules had the same median std Δlog LR (0.000)")
    assert "most variable" not in stability and "steadiest" not in stability


def test_metalr_random_is_an_ablation_not_the_best_baseline(results):
    for run in results["runs"]:
        if run["schedule"] == "cosine":
            run["schedule"] = "metalr-random"
    results["config"]["schedules"] = ["metalr", "constant", "metalr-random"]
    versus = findings(aggregate(results))[1]
    assert bold(versus) == ["constant"]  # metalr-random has the higher test accuracy (0.960), but is metalr itself
    results["config"]["schedules"] = ["metalr", "metalr-random"]
    results["runs"] = [r for r in results["runs"] if r["schedule"] != "constant"]
    assert bold(findings(aggregate(results))[1]) == ["metalr-random"], "with no other schedule it is compared with"


def test_findings_without_metalr_and_with_one_schedule(results):
    no_metalr = copy.deepcopy(results)
    no_metalr["config"]["schedules"].remove("metalr")
    no_metalr["runs"] = [r for r in no_metalr["runs"] if r["schedule"] != "metalr"]
    texts = findings(aggregate(no_metalr))
    assert not bold(texts[0]) and names(texts[0], "constant 1/2", "cosine 1/2") and "metalr" not in texts[0]
    assert "no metalr runs" in texts[1] and not _NUMBER.findall(texts[1])
    assert texts[2].startswith("LR stability") and texts[2].index("cosine") < texts[2].index("constant")

    only_metalr = copy.deepcopy(results)
    only_metalr["config"]["schedules"] = ["metalr"]
    only_metalr["runs"] = [r for r in only_metalr["runs"] if r["schedule"] == "metalr"]
    texts = findings(aggregate(only_metalr))
    assert len(texts) == 3
    assert bold(texts[0]) == ["metalr"] and quotes(texts[0], "0.9 4 2.00 6.0 2/2")
    assert "Only metalr" in texts[1] and not bold(texts[1])
    assert "metalr" in texts[2] and quotes(texts[2], "0.400 4 3.75e-04 3.00e-03")


def test_lower_is_better_metric_and_nothing_reached(results):
    results["config"].update(metric="wer", greater_is_better=False, threshold=0.05, test_metrics=["wer"])
    wers = {"metalr": (0.10, 0.12), "constant": (0.20, 0.22), "cosine": (0.15, NAN)}
    for run in results["runs"]:
        run["test"] = {"wer": wers[run["schedule"]][run["seed"]]}
        run["threshold"] = {"reached": False, "evals": None, "epoch": None, "seconds": None, "step": None}
    first, versus, lost, _ = findings(aggregate(results))
    assert not bold(first) and names(first, "No schedule", "eval_wer ≤") and quotes(first, "0.05")
    # the best baseline by the lower-is-better test wer is cosine (0.150); metalr's 0.110 is 0.040 lower: better
    assert bold(versus) == ["cosine"] and quotes(versus, "0.110 0.150 -0.040") and "better" in versus
    assert quotes(lost, "4") and not bold(lost) and not names(lost, "cosine") and not names(lost, "constant")


def test_findings_without_threshold_or_test_metrics_fall_back_to_val_loss(results):
    results["config"]["threshold"] = None
    del results["config"]["test_metrics"]
    for run in results["runs"]:
        run["threshold"] = None
    texts = findings(aggregate(results))
    assert "No threshold" in texts[0] and not bold(texts[0])
    # best baseline by best val loss: constant (0.285); metalr 0.230, 0.055 lower
    assert bold(texts[1]) == ["constant"] and quotes(texts[1], "0.230 0.285 -0.055") and "val loss" in texts[1]
    assert quotes(texts[2], "2") and not bold(texts[2]) and "constant" not in texts[2]


def test_missing_seeds_are_reported(results):
    results["config"]["seeds"] = [0, 1, 2]
    md = render_markdown(aggregate(results), {})
    missing = next(line for line in md.splitlines() if "Missing runs" in line)
    assert re.findall(r"(\w+) seed (\d+)", missing) == [("metalr", "2"), ("constant", "2"), ("cosine", "2")]
    assert "| metalr | 2/2 |" in md
    # a schedule whose package was missing at a later call: its seeds are noted as such, not as interrupted
    results["config"]["skipped_schedules"] = {"cosine": "somepkg", "prodigy": "prodigyopt"}
    md = render_markdown(aggregate(results), {})
    assert "Not run, their package missing (pip install 'hf_metalr[peers]'): cosine (somepkg; seeds 2), prodigy " \
           "(prodigyopt)." in md
    missing = next(line for line in md.splitlines() if "Missing runs" in line)
    assert re.findall(r"(\w+) seed (\d+)", missing) == [("metalr", "2"), ("constant", "2")]
    results["config"]["seeds"] = [0, 1]  # cosine ran in full after all: no longer noted
    assert "cosine (somepkg" not in render_markdown(aggregate(results), {})


# ------------------------------------------------------------------ plots


@pytest.mark.parametrize("name", ["lr_curve.png", "val_metric.png", "time_to_threshold.png"])
def test_pngs_are_valid_images_of_the_expected_size(report_dir, name):
    path = report_dir / name
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape == (500, 900, 4)
    assert np.std(image[..., :3]) > 0.05  # something was drawn


def test_report_survives_a_single_run_that_diverged_at_once(tmp_path, results):
    results["config"]["schedules"] = ["metalr"]
    results["runs"] = [copy.deepcopy(results["runs"][5])]
    results["runs"][0].update(schedule="metalr", seed=0, evals=[], lr_curve=[[1, 0.1, NAN]])
    md = write_report(_write(tmp_path, results)).read_text()
    assert "No schedule reached the threshold" in md and "| metalr | 0/1 | – | – | – |" in md
    for name in ("lr_curve.png", "val_metric.png", "time_to_threshold.png"):
        assert imread(tmp_path / name).shape == (500, 900, 4)


# ------------------------------------------------------------------ errors and the CLI


def test_write_report_errors_clearly(tmp_path):
    with pytest.raises(ResultsError, match="no results.json"):
        write_report(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"format": 2, "config": {}, "runs": []}))
    with pytest.raises(ResultsError, match="not a format-1 results file"):
        write_report(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not readable JSON"):
        write_report(tmp_path)


def test_cli_rebuilds_the_report_and_prints_its_path(report_dir, capsys):
    (report_dir / "report.md").unlink()
    assert report_main([str(report_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(report_dir / "report.md")
    assert (report_dir / "report.md").is_file()


def test_cli_errors_on_missing_dir_and_missing_results(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert "hf-metalr report: error: no such directory" in capsys.readouterr().err
    assert report_main([str(tmp_path)]) == 2
    assert f"no results.json at {tmp_path / 'results.json'}" in capsys.readouterr().err


def test_top_level_cli_dispatches_to_report(tmp_path, capsys):
    from hf_metalr.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "hf-metalr report: error: no such directory" in capsys.readouterr().err


def test_the_validation_plot_cuts_its_axis_only_for_gross_outliers():
    from hf_metalr.reporting.plots import robust_ylim

    digits_like = [0.08, 0.1, 0.3, 0.6, 0.8, 0.9] + [0.95, 0.97, 0.98, 0.985, 0.99, 0.99] * 6  # early points, a plateau
    assert robust_ylim(digits_like, 0.95) is None, "an accuracy curve's early points are no outliers"
    regression = [-0.6, -0.3, -0.1, 0.0, 0.2, 0.4, 0.5, 0.6, 0.65, 0.7] * 3 + [-1e7, -2e4, -1.9e4, -1200]
    lo, hi = robust_ylim(regression, 0.9)  # the first R2s of runs at a far too high LR
    assert -3 < lo < -0.6 and 0.9 < hi < 1.3, (lo, hi)  # the bulk and the threshold's line in view
    assert robust_ylim([0.5, float("nan")]) is None and robust_ylim([]) is None


def test_the_report_reads_the_threshold_it_names_from_the_runs_evaluations(tmp_path, results):
    write_report(_write(tmp_path / "as_run", results))
    assert "| metalr | 2/2 | 4 [3–5] |" in (tmp_path / "as_run" / "report.md").read_text()
    results["config"]["threshold"] = 0.97  # edited by hand: no run's accuracy reached it
    md = write_report(_write(tmp_path / "edited", results)).read_text()
    assert "| metalr | 0/2 | – |" in md and "≥ 0.97" in md, "the crossings follow the threshold the report names"


if __name__ == "__main__":
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(_fixture_text())
    print(f"wrote {FIXTURE}")

"""``hf-metalr trace``: a run's decision trace as a table, a summary and a plot."""

import math

from matplotlib.image import imread

from hf_metalr import MetaLRCallback, read_trace, save_policy
from hf_metalr.cli import main as cli_main
from hf_metalr.reporting.trace_view import _summary_text, decision_kind, format_trace, lr_series, summarize_trace

from test_alignment import always
from tiny_job import make_trainer


def _entry(step, value, action, applied, lr, gate=None, evidence=None, diverged=False, **extra):
    return {"global_step": step, "epoch": step / 10, "metric": "eval_accuracy", "greater_is_better": True,
            "value": value, "action": action, "applied": applied, "gate": gate, "evidence": evidence, "lr": lr,
            "scale": lr / 1e-3, "diverged": diverged, "early_cuts": [], **extra}


SYNTHETIC = [
    _entry(10, 0.50, 2.0, 1.0, 1e-3, gate="raise held: at the first evaluation no metric trend backs the alignment"),
    _entry(20, 0.70, 2.0, 2.0, 2e-3, evidence="raise: the gradient keeps pointing along the previous steps (t=+5.0)"),
    _entry(30, 0.60, 1.0, 0.5, 1e-3, evidence="cut: the previous raise was punished; taken back"),
    _entry(40, 0.80, 2.0, 1.5, 1.5e-3, evidence="raise: ...; capped by max_lr=0.0015: x1.5 applied instead of x2"),
    _entry(50, "nan", 0.5, 0.5, 7.5e-4, diverged=True),
    _entry(60, 0.75, 0.8, 0.8, 6e-4, evidence="cut: the metric got worse and the gradient opposes the steps"),
    _entry(70, 0.78, 1.0, 1.0, 6e-4),
]


def test_each_decision_is_classified_and_counted():
    assert [decision_kind(e) for e in SYNTHETIC] == ["held", "policy", "fixed", "capped", "divergence", "policy", "policy"]
    summary = summarize_trace(SYNTHETIC)
    assert summary["decisions"] == 7 and summary["raised"] == 2 and summary["cut"] == 3
    assert (summary["held"], summary["fixed"], summary["capped"], summary["divergences"]) == (1, 1, 1, 1)
    assert math.isclose(summary["initial_lr"], 1e-3) and math.isclose(summary["final_lr"], 6e-4)
    # under a decaying schedule the trace's lr carries the schedule's factor: the controller's LR is initial x scale
    decayed = [dict(e, initial_lr=1e-3, lr=e["lr"] * 0.25) for e in SYNTHETIC]
    assert math.isclose(summarize_trace(decayed)["final_lr"], 6e-4) and math.isclose(summarize_trace(decayed)["final_scale"], 0.6)
    # a safeguard's move that happens to equal what the policy asked is still the safeguard's
    restore = _entry(80, 0.8, 2.0, 2.0, 1.2e-3, evidence="restore: the distance check cut the LR, ...", rule="restore")
    undo = _entry(90, 0.7, 0.5, 0.5, 6e-4, evidence="undo: the metric got worse right after the last raise ...")
    assert decision_kind(restore) == decision_kind(undo) == "fixed"
    assert "LR 0.001 -> 0.0006 (the controller's scale x0.6" in _summary_text(summarize_trace(decayed), "eval_accuracy")
    # greater is better: the best is the highest accuracy, and the NaN is not a candidate
    assert (summary["best"], summary["best_step"]) == (0.80, 40)
    lower = [dict(e, greater_is_better=False) for e in SYNTHETIC]
    assert (summarize_trace(lower)["best"], summarize_trace(lower)["best_step"]) == (0.50, 10)


def test_the_plot_draws_the_tables_lr_beside_the_controllers_under_a_schedule():
    base_xs, base_ys = lr_series(SYNTHETIC)["base"]
    assert base_xs == [0] + [e["global_step"] for e in SYNTHETIC]
    assert all(math.isclose(y, lr) for y, lr in zip(base_ys, [1e-3] + [e["lr"] for e in SYNTHETIC]))
    assert "scheduled" not in lr_series(SYNTHETIC), "a constant schedule: one curve"
    decayed = [dict(e, initial_lr=1e-3, lr=e["lr"] * (1 - i / len(SYNTHETIC))) for i, e in enumerate(SYNTHETIC)]
    series = lr_series(decayed)
    assert all(math.isclose(a, b) for a, b in zip(series["base"][1], base_ys)), "the controller's LR is initial x scale"
    steps, lrs = series["scheduled"]
    assert steps == [e["global_step"] for e in decayed] and lrs == [e["lr"] for e in decayed], "the table's lr column"
    assert lr_series([]) == {"base": ([], [])}
    summary = _summary_text(summarize_trace(SYNTHETIC[:1]), "eval_accuracy")
    assert summary.startswith("1 decision: 0 raised the LR") and "2 decisions" in _summary_text(
        summarize_trace(SYNTHETIC[:2]), "eval_accuracy")
    assert "1 move the policy did not ask for (a safeguard's), 1 move cut short by min_lr/max_lr, 1 divergence (LR " \
           "halved)" in _summary_text(summarize_trace(SYNTHETIC), "eval_accuracy")


def test_a_move_at_the_runs_final_step_is_named_as_one_no_step_used():
    ended = [dict(e, features={"progress": e["global_step"] / 60}) for e in SYNTHETIC[:6]]  # the cut at step 60 ends it
    summary = summarize_trace(ended)
    assert summary["moved_at_end"] == 1 and summary["cut"] == 3
    assert "(the last move, at the run's final step, applied to no step)" in _summary_text(summary, "eval_accuracy")
    # a keep there, or a move before the end, is not named
    assert summarize_trace([dict(e, features={"progress": e["global_step"] / 70}) for e in SYNTHETIC])["moved_at_end"] == 0
    assert summarize_trace([dict(e, features={"progress": e["global_step"] / 100}) for e in SYNTHETIC[:6]])["moved_at_end"] == 0
    assert "applied to no step" not in _summary_text(summarize_trace(SYNTHETIC), "eval_accuracy")


def test_the_table_has_one_row_a_decision_and_cuts_the_reasons_unless_asked():
    short = format_trace(SYNTHETIC, width=80).splitlines()
    assert short[0] == "eval_accuracy: higher is better" and short[1].split()[:3] == ["step", "epoch", "eval_accuracy"]
    rows = short[2:]
    assert [int(r.split()[0]) for r in rows] == [e["global_step"] for e in SYNTHETIC]
    assert all(len(r) <= 80 for r in rows) and rows[0].endswith("...")
    assert "divergence: the metric is not finite" in format_trace(SYNTHETIC, full=True)
    full = format_trace(SYNTHETIC, full=True, width=80).splitlines()[2:]
    assert full[0].endswith(SYNTHETIC[0]["gate"]) and full[3].endswith("x1.5 applied instead of x2")
    assert format_trace([]) == "no decisions yet"
    diverged = [dict(e, value="nan") for e in SYNTHETIC[:2]]
    assert summarize_trace(diverged)["best_step"] is None
    assert "no finite eval_accuracy" in _summary_text(summarize_trace(diverged), "eval_accuracy")


def test_the_command_reads_a_real_runs_trace_with_its_early_cuts(tmp_path, capsys):
    keep = tmp_path / "keep"
    save_policy(always(2), keep)
    out = tmp_path / "high"
    trainer = make_trainer(out, callbacks=[MetaLRCallback(policy=str(keep) + ".safetensors")], learning_rate=3.0,
                           max_steps=10, logging_steps=1)
    trainer.train()
    capsys.readouterr()  # the Trainer's own log lines
    trace = read_trace(out / "metalr_trace.jsonl")
    cuts = trace[0]["early_cuts"]
    assert cuts, "the run at LR 3.0 needs the early-divergence guard's cuts for this test"

    assert cli_main(["trace", str(out), "--plot", str(tmp_path / "plot.png")]) == 0
    printed = capsys.readouterr().out.splitlines()
    guard = [line for line in printed if "early-divergence guard at step" in line]
    assert [int(line.split("step ")[1].split(":")[0]) for line in guard] == [c["step"] for c in cuts]
    rows = [line for line in printed[:printed.index("")] if line.split()[0].isdigit()]
    assert [int(r.split()[0]) for r in rows] == [e["global_step"] for e in trace]
    assert [float(r.split()[5]) for r in rows] == [float(f"{e['lr']:.3g}") for e in trace]
    summary = next(line for line in printed if line.startswith("LR "))
    assert summary.startswith(f"LR 3 -> {trace[-1]['lr']:.3g}")
    assert f"{len(cuts)} early-divergence cut{'s' if len(cuts) > 1 else ''} before the first decision" in "\n".join(printed)
    assert imread(tmp_path / "plot.png").shape[:2] == (600, 900)

    # the trace file itself works as well as its folder
    assert cli_main(["trace", str(out / "metalr_trace.jsonl")]) == 0
    assert capsys.readouterr().out.splitlines() == printed[:-1], "the same, without the plot's line"


def test_a_folder_without_a_trace_or_a_corrupt_trace_is_an_error_that_says_so(tmp_path, capsys):
    assert cli_main(["trace", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no metalr_trace.jsonl" in err and "MetaLRCallback" in err
    assert cli_main(["trace", str(tmp_path / "missing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    compare_folder = tmp_path / "cmp"
    for run in ("metalr-seed0", "metalr-seed1"):
        (compare_folder / "runs" / run).mkdir(parents=True)
        (compare_folder / "runs" / run / "metalr_trace.jsonl").write_text("")
    assert cli_main(["trace", str(compare_folder)]) == 2
    assert f"a compare folder: each metalr run has its own, e.g. {compare_folder / 'runs' / 'metalr-seed0'}" in \
        capsys.readouterr().err
    (tmp_path / "metalr_trace.jsonl").write_text("{not json\n{}\n")
    assert cli_main(["trace", str(tmp_path)]) == 2
    assert "line 1, is not a JSON object" in capsys.readouterr().err


def test_a_cut_reason_keeps_the_caps_note_and_read_trace_takes_the_folder(tmp_path):
    capped = _entry(10, 0.5, 2.0, 1.25, 1.25e-3, evidence="raise: the gradient keeps pointing along the previous steps "
                    "(t=+5.0), the steps are too short; capped by max_lr=0.00125: x1.25 applied instead of x2")
    row = format_trace([capped], width=130).splitlines()[-1]
    assert len(row) <= 130 and row.endswith("...; capped by max_lr=0.00125: x1.25 applied instead of x2")
    assert row.split("  ")[-1].startswith("raise: the gradien")
    narrow = format_trace([capped], width=90).splitlines()[-1]  # no room for the note: the reason's start, cut
    assert len(narrow) <= 90 and narrow.endswith("...") and "raise: the gradient" in narrow

    (tmp_path / "metalr_trace.jsonl").write_text('{"global_step": 5}\n')
    assert read_trace(tmp_path) == read_trace(tmp_path / "metalr_trace.jsonl") == [{"global_step": 5}]


def test_an_early_distance_cut_reads_as_such_above_the_first_row():
    cuts = [{"step": 8, "loss": 3.1, "reference": None, "applied": 0.5, "scale": 0.5, "lr": 0.015, "param_drift": 4.5,
             "lr_over_distance": 84.0},
            {"step": 16, "loss": 3.0, "reference": None, "applied": 0.5, "scale": 0.25, "lr": 0.0075, "param_drift": 5.5,
             "lr_over_distance": 1e6}]
    printed = format_trace([_entry(32, 0.5, 1.0, 1.0, 0.0075, early_cuts=cuts)]).splitlines()
    assert printed[2] == ("  early distance cut at step 8: the parameters moved by 4.50 of their starting norm, and the LR is "
                          "84 times the distance estimate, LR x0.5 -> 0.015")
    assert printed[3].endswith("and there is no positive distance estimate yet, LR x0.5 -> 0.0075")
    assert printed[4].split()[0] == "32"
    summary = summarize_trace([_entry(32, 0.5, 1.0, 1.0, 0.0075, early_cuts=cuts)])
    assert (summary["early_cuts"], summary["early_distance_cuts"]) == (0, 2)
    assert "2 early distance cuts before the first decision" in _summary_text(summary, "eval_accuracy")

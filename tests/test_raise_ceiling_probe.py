"""benchmarks/raise_ceiling_probe.py: the raise ceiling at another fraction of the estimate, side by side."""

from benchmark_scripts import load_benchmark


def test_each_ceiling_is_in_force_for_its_runs_and_the_shipped_one_is_restored(monkeypatch):
    module = load_benchmark("raise_ceiling_probe")
    from hf_metalr.controller import gate

    seen = []

    def run(task, lr, seed, schedule, out, done, epochs, log):
        seen.append((schedule, gate.RAISE_CEILING))
        return {"test": {task.test_metrics[0]: 0.5}}

    monkeypatch.setattr(module.unseen_families, "run", run)
    shipped = gate.RAISE_CEILING
    assert module.final_metrics(module.unseen_families.TASKS["linear-lstsq"], 0.03, "metalr", range(2), 1, 0.25) == [0.5, 0.5]
    assert seen == [("metalr", 0.25)] * 2 and gate.RAISE_CEILING == shipped


def test_the_probe_trains_the_constant_lr_and_the_callback_under_each_ceiling(capsys):
    module = load_benchmark("raise_ceiling_probe")
    assert module.main(["--cells", "linear-lstsq:1", "--ceilings", "1,0.5", "--seeds", "1", "--epochs", "1"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| linear-lstsq"))
    values = [float(cell) for cell in row.split("|")[3:6]]
    assert len(values) == 3 and all(0 < v < 1 for v in values), row

"""The optimisation-history figure of `bench tune`'s studies (bench/report/tuning_figures.py)."""

from __future__ import annotations

from tests.test_tuning import FakeRunner, _study, _tune


def test_history_figure_draws_every_trial_and_the_best_so_far(tmp_path, monkeypatch):
    from bench.report import tuning_figures

    runner = FakeRunner(tmp_path, epochs=4)
    _tune(tmp_path, runner, 6, pruner="none")
    drawn = {}
    real = tuning_figures._points

    def spy(study):
        drawn["points"] = real(study)
        return drawn["points"]

    monkeypatch.setattr(tuning_figures, "_points", spy)
    paths = tuning_figures.tuning_history_figures(tmp_path, tmp_path / "figures")
    assert sorted(p.name for p in paths) == ["tuning_smoke.pdf", "tuning_smoke.png"]
    complete, pruned, default = drawn["points"]
    study = _study(tmp_path)
    assert sorted(complete) == sorted((t.number, t.value) for t in study.trials if t.value is not None)
    assert len(complete) == 6 and not pruned and default == 0  # trial 0: the cell's own settings
    assert max(v for _, v in complete) == study.best_value


def test_no_study_no_figure(tmp_path):
    from bench.report.tuning_figures import tuning_history_figures

    assert tuning_history_figures(tmp_path, tmp_path / "figures") == []

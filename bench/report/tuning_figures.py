"""Optimisation history of `bench tune`'s studies (issue 28.4): one figure per suite, one panel per study (cell),
each finished trial's validation score by trial number (pruned trials at their last reported value, marked x),
the best-so-far line, the default settings' trial marked, and the study's budget in the panel's title. Read from the
studies' SQLite storage (`<results>/tuning/<suite>.db`) through `bench.tuning.tuning_summary` and Optuna."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from bench.report.figures import _caption, _save, style


def _points(study) -> tuple[list[tuple[int, float]], list[tuple[int, float]], int | None]:
    """(complete trials as (number, value), pruned trials at their last intermediate value, the default's number)."""
    from optuna.trial import TrialState

    complete, pruned, default = [], [], None
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            complete.append((trial.number, float(trial.value)))
            if trial.user_attrs.get("defaults"):
                default = trial.number
        elif trial.state == TrialState.PRUNED and trial.intermediate_values:
            pruned.append((trial.number, float(trial.intermediate_values[max(trial.intermediate_values)])))
    return complete, pruned, default


def tuning_history_figure(results: Path, suite: str, out_dir: Path) -> list[Path]:
    """`tuning_<suite>.png|pdf` with one panel per study of the suite; [] when the suite has no study."""
    from bench.tuning import _quiet_optuna, _storage, study_path, tuning_summary

    rows = tuning_summary(results, suite)
    if not rows:
        return []
    optuna = _quiet_optuna()
    cols = min(3, len(rows))
    n_rows = math.ceil(len(rows) / cols)
    with style() as plt:
        fig, axes = plt.subplots(n_rows, cols, figsize=(4.2 * cols, 3.0 * n_rows), squeeze=False)
        for ax, row in zip(axes.flat, rows):
            study = optuna.load_study(study_name=row["study"], storage=_storage(study_path(results, suite)))
            complete, pruned, default = _points(study)
            if complete:
                xs, ys = zip(*complete)
                ax.plot(xs, ys, "o", ms=4, color="C0", label="trial")
                best, line = -math.inf, []
                for x, y in sorted(complete):
                    best = max(best, y)
                    line.append((x, best))
                bx, by = zip(*line)
                ax.step(bx, by, where="post", color="C1", label="best so far")
            if pruned:
                px, py = zip(*pruned)
                ax.plot(px, py, "x", color="C3", label="pruned (last epoch)")
            if default is not None:
                value = dict(complete)[default]
                ax.plot([default], [value], "s", mfc="none", mec="k", ms=8, label="defaults")
            cell = "/".join(str(row.get(k, "")) for k in ("split", "backbone", "method"))
            ax.set_title(f"{cell}\n{row['trials']} trials, {row['cpu_minutes']:.1f} CPU-min", fontsize=8)
            ax.set_xlabel("trial")
            ax.set_ylabel(f"valid {row.get('metric') or 'score'}")
            ax.legend(fontsize=6, loc="best")
            ax.xaxis.get_major_locator().set_params(integer=True)
        for ax in list(axes.flat)[len(rows):]:
            ax.axis("off")
        fig.tight_layout()
        text = (f"bench tune, suite {suite}: each study's validation score per trial (the objective; test is never "
                f"read), the best so far, the default settings' trial (square); TPE seed and pruner as recorded in "
                f"{study_path(results, suite).name}.")
        _caption(fig, "\n".join(textwrap.wrap(text, width=int(70 * cols))))
        return _save(fig, out_dir, f"tuning_{suite}")


def tuning_history_figures(results: Path, out_dir: Path) -> list[Path]:
    """One figure per suite that has a study database under `<results>/tuning/`."""
    folder = Path(results) / "tuning"
    written: list[Path] = []
    for path in sorted(folder.glob("*.db")) if folder.is_dir() else []:
        written += tuning_history_figure(results, path.stem, out_dir)
    return written

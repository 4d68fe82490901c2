"""The trained components of a run and whether each stopped at its cap, read from its record (issue 23.7): the
engine's part. Each method family says which of its record's parts are trained components through the class hook
`Method.training_components(record)` (bench.method), built from these helpers; `bench.report.convergence` marks
runs and tables from what the hooks return, without knowing any family."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Component:
    """One trained component of a run: whether it stopped at its cap, and what says so."""

    name: str
    capped: bool | None  # None: trained, but its record cannot tell (one validation evaluation)
    detail: str


def epoch_cap(settings: dict | None) -> int | None:
    """A settings dict's `epochs` cap (None without one)."""
    value = (settings or {}).get("epochs")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def find_settings(settings: dict | None, key: str) -> dict | None:
    """The nested settings dict `key` (e.g. a CF encoder's `cf`, or `llm.cf`), depth first."""
    if not isinstance(settings, dict):
        return None
    if isinstance(settings.get(key), dict):
        return settings[key]
    for value in settings.values():
        found = find_settings(value, key)
        if found is not None:
            return found
    return None


def by_epochs(name: str, info: dict, cap: int | None, curve: list | None = None) -> Component | None:
    """`early_stopped` when the component recorded it, else epochs run (or curve length) >= its cap."""
    if info.get("early_stopped") is not None:
        stopped = bool(info["early_stopped"])
        return Component(name, not stopped, "stopped early on validation" if stopped else "ran to its epoch cap")
    epochs = info.get("epochs_run")
    if epochs is None:
        epochs = len(info.get("curve") or curve or []) or None
    if epochs is None or cap is None:
        return None
    return Component(name, int(epochs) >= cap, f"{int(epochs)} of {cap} epochs")


def by_selection(name: str, selection: dict | None) -> Component | None:
    """A fixed-budget component that kept its best validation state (`selection`: curve, best step,
    `early_stopped`): at the cap when, of two or more evaluations, the best is the last; not judged after one."""
    if not isinstance(selection, dict) or selection.get("early_stopped") is None:
        return None
    early = bool(selection["early_stopped"])
    curve = selection.get("curve") or []
    last = curve[-1].get("step") if curve and isinstance(curve[-1], dict) else None
    if not early and len(curve) < 2:
        return Component(name, None, f"one validation evaluation (step {last}): no stopping evidence")
    detail = (f"best validation at step {selection.get('best_step')} of {last}" if early else
              f"best validation at the last of {len(curve)} evaluations (step {last})")
    return Component(name, not early, detail)


def by_flag(name: str, converged) -> Component | None:
    """A component whose record says `converged` (True: stopped early on validation) directly."""
    if converged is None:
        return None
    return Component(name, not converged, "stopped early on validation" if converged else "ran to its epoch cap")


def model_training(record: dict) -> list[Component]:
    """The run's own model (`training`): the record's `fit.converged`, else the backbone's (or a pointwise model's)
    epochs against its cap. Every family's runs have it."""
    spec = record.get("spec") or {}
    info = record.get("method_info") or {}
    fit = record.get("fit") or {}
    if fit.get("converged") is not None:
        return [by_flag("training", bool(fit["converged"]))]
    training = info.get("training") if isinstance(info.get("training"), dict) else {}
    if training:
        settings = spec.get("method_settings") if spec.get("backbone") == "none" else spec.get("backbone_settings")
        part = by_epochs("training", training, epoch_cap(settings), fit.get("curve"))
        return [part] if part else []
    return []

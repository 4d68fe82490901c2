"""`bench tune`: every method tuned the same way, on validation only, before it is compared (issue 28).

One Optuna study per cell of a suite (dataset, split, backbone, method), named
`<suite>:<dataset>/<split>/<backbone>/<method>`, stored in `<results>/tuning/<suite>.db` (SQLite). A trial is
an ordinary run of the cell at the suite's first seed with the sampled settings (the `search_space` each settings
class declares, bench.search): its run id hashes them, its record lands in the store like any run's, and a trial
whose run is already stored reuses the record. The objective is the run's validation score and nothing else
(`validation_score`). A study's first trial is the cell's own settings (the run `bench run` makes, usually
stored already), so a tuned cell is never worse than its default on validation.

Resuming: a study keeps its trials; `bench tune` runs only those missing up to `--trials` (complete and pruned
trials count; a failed one does not; one interrupted mid-run is rerun with its settings). TPE is reseeded per
trial from (seed, study, trial number), so a study stopped between trials and resumed samples what an
uninterrupted one would.

Budget: each trial records its run id, CPU and wall seconds and whether it was pruned (trial user attributes);
the study records the trials asked / finished and the CPU-minutes spent. `tuning_summary` is one row per cell,
`check_equal_budget` refuses a comparison of cells tuned with different trial counts or pruners, and
`write_tuned_profile` writes the best settings as the suite's `tuned` profile (bench/suites/tuned/<suite>.yaml)
with their provenance.

Pruning (`--pruner median`) needs in-process trials (`--workers 1 --executor local`): the run's progress reporter
(bench.progress) is replaced, for that trial, by one that reports each epoch's validation score of the backbone's
training to the trial, and a trial the median rule stops ends its run there (nothing is recorded). Trials in a
pool or on Ray run in other processes, where no reporter of this one reaches: there the pruner is refused.
Methods whose validation score is not the backbone's epoch curve (CoLLM / TALLRec's LLM steps) are not pruned.

One module for the API and its CLI (`add_parser`, `command`), hence its length.
"""

from __future__ import annotations

import contextlib
import math
import resource
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError, UnknownChoiceError
from bench.hashing import json_hash
from bench.search import Choice, FloatRange, IntRange, Range, get_dotted, set_dotted, space_of
from bench.spec import RunSpec, Suite

STUDY_FOLDER = "tuning"  # <results>/tuning/<suite>.db
DEFAULT_TRIALS = 20
MAX_TRIALS = 1000
PRUNERS = ("median", "none")
# Optuna's MedianPruner: no trial is stopped before 5 have finished, nor before its 3rd epoch
MEDIAN_PRUNER = {"n_startup_trials": 5, "n_warmup_steps": 3}
LAYERS = ("backbone", "method")
RUN_STAGES = ("prepare", "fit_total", "evaluate")  # a record's timings that add up to its wall time


# --------------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One tuned cell: the suite's run of it at its first seed (`base`) and what its trials search."""

    suite: str
    base: RunSpec
    space: dict[str, Range]  # "backbone.<setting>" / "method.<setting>" (dotted for nested settings) -> range
    variant: str = ""  # where the suite runs several variants of (dataset, split, backbone, method): which one

    @property
    def key(self) -> str:
        b = self.base
        return f"{b.dataset}/{b.split}/{b.backbone}/{b.method}" + (f"[{self.variant}]" if self.variant else "")

    @property
    def study(self) -> str:
        return f"{self.suite}:{self.key}"


def cell_space(spec: RunSpec) -> dict[str, Range]:
    """What a cell searches: its backbone's settings' space and its method's (less the entry's preset: what
    defines `llminit-var` is never tuned away), for its resolved settings (a `when` may leave entries out)."""
    from bench.backbones import BACKBONES
    from bench.catalog import METHODS

    space = {f"backbone.{name}": param for name, param in
             space_of(BACKBONES[spec.backbone].settings, spec.backbone_settings).items()}
    space.update({f"method.{name}": param for name, param in space_of(
        METHODS.get(spec.method).Settings, spec.method_settings, set(METHODS.preset(spec.method))).items()})
    return space


def _flat(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _variants(specs: list[RunSpec]) -> list[str]:
    """Labels telling apart the suite's runs of one (dataset, split, backbone, method) at one seed (a `grid:`
    sweep, several encoders, parts with other settings): the settings that differ, e.g. `split.shots=16`, or a
    short hash where those are too long to read."""
    flat = [{"encoder": s.encoder, **_flat(s.dataset_settings, "dataset."), **_flat(s.split_settings, "split."),
             **_flat(s.backbone_settings, "backbone."), **_flat(s.method_settings, "method."),
             **_flat(s.encoder_settings, "encoder.")} for s in specs]
    keys = sorted({k for f in flat for k in f if len({json_hash(g.get(k)) for g in flat}) > 1})
    labels = [",".join(f"{k}={f.get(k)}" for k in keys) for f in flat]
    if len(set(labels)) < len(labels) or max(map(len, labels)) > 60:
        labels = [f"~{s.model_copy(update={'seed': 0}).run_id[:8]}" for s in specs]
    return labels


def suite_cells(suite: Suite, choose: Mapping[str, list[str] | None] | None = None) -> list[Cell]:
    """The suite's cells (its runs at its first seed), in suite order, restricted by `choose` ({"method": [...],
    ...}: an unknown name is a BenchError naming what the suite offers). Cells whose settings declare no search
    space are included, with an empty space (nothing to tune: `tune` skips them)."""
    from bench.spec import expand

    specs = [s for s in expand(suite) if s.seed == suite.seeds[0]]
    for field, wanted in (choose or {}).items():
        if wanted:
            offered = sorted({getattr(s, field) for s in specs})
            unknown = [name for name in wanted if name not in offered]
            if unknown:
                raise UnknownChoiceError(f"{field} of suite {suite.name!r}", unknown[0], offered)
            specs = [s for s in specs if getattr(s, field) in wanted]
    groups: dict[tuple[str, ...], list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.dataset, spec.split, spec.backbone, spec.method), []).append(spec)
    variant = {}
    for group in groups.values():
        variant.update(zip((s.run_id for s in group), _variants(group) if len(group) > 1 else [""]))
    return [Cell(suite.name, spec, cell_space(spec), variant[spec.run_id]) for spec in specs]


def trial_spec(base: RunSpec, values: Mapping[str, Any]) -> RunSpec:
    """The cell's run with the sampled `values` ("backbone.learning_rate", "method.csft.lr", ...) set in its
    settings (nested ones in place, the rest of the suite's settings kept), validated as any run's."""
    from bench.backbones import resolve_backbone_config
    from bench.catalog import METHODS

    layers = {"backbone": dict(base.backbone_settings), "method": dict(base.method_settings)}
    for name, value in values.items():
        layer, _, key = name.partition(".")
        if layer not in layers or not key:
            raise BenchError(f"searched setting {name!r}: expected backbone.KEY or method.KEY")
        layers[layer] = set_dotted(layers[layer], key, value)
    return base.model_copy(update={
        "backbone_settings": resolve_backbone_config(base.backbone, layers["backbone"]),
        "method_settings": METHODS.settings(base.method, layers["method"]).model_dump(mode="json")})


def validation_score(record: Mapping[str, Any]) -> tuple[float, str]:
    """(score, metric) of a run on its validation data: the objective. Reads `record["method_info"]` and nothing
    else (never the test metrics). The LLM step kept last (CoLLM's step 2, TALLRec's step 1: its best validation
    AUC), else the backbone's best validation score (RecBole: NDCG@10 / Recall@20), else a pointwise CF model's
    best validation AUC. Higher is better for each."""
    info = record["method_info"]
    for step in ("stage2", "stage1"):
        selection = (info.get(step) or {}).get("selection") or {}
        if "best_valid_auc" in selection:
            return float(selection["best_valid_auc"]), "AUC"
    training = info.get("training") or {}
    if "best_valid_score" in training:
        return float(training["best_valid_score"]), str(training.get("valid_metric", "score"))
    if "best_valid_auc" in training:
        return float(training["best_valid_auc"]), "AUC"
    raise BenchError("the run records no validation score (method_info has no training or LLM step selection): "
                     "its method cannot be tuned")


# ----------------------------------------------------------------------------------------- running trials


class _PrunedRun(BaseException):
    """Raised inside a run by its reporter when the trial's pruner stops it. A BaseException on purpose: a run
    records any Exception as its failure, and a pruned run is none; the executors treat it as an interrupt (the
    run's unfinished folder is cleared, nothing recorded)."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


@contextlib.contextmanager
def _reporting_to(trial) -> Iterator[None]:
    """While the block runs, each in-process run reports the backbone's epochs to `trial` and is stopped when the
    pruner says so (bench.progress.observing: every run's progress updates, shown or not)."""
    from bench.progress import observing

    best = [-math.inf]

    def hear(stage: str, step: int, total: int | None, values: dict) -> None:
        score = next((v for k, v in values.items() if k.startswith("valid ")), None)
        # the backbone's epochs only (methods.backbones.cf: "train", "valid <metric>"): the objective's curve
        if stage == "train" and isinstance(score, (int, float)) and math.isfinite(score):
            best[0] = max(best[0], float(score))  # the objective is the best epoch's score
            trial.report(best[0], int(step))
            if trial.should_prune():
                raise _PrunedRun(int(step))

    with observing(hear):
        yield


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children reaped so far (a pool's workers once it is shut down)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_seconds(record: Mapping[str, Any]) -> float:
    """A record's wall time: preparation, fit and evaluation (its `timings`)."""
    timings = record.get("timings") or {}
    return float(sum(timings.get(stage, 0.0) for stage in RUN_STAGES))


class TrialRunner:
    """Runs trial specs as ordinary runs (bench.executors.run_specs: records, logs, caches, locks) and reads their
    records back. `batch` trials run at once: a pool of that many processes, or as many Ray tasks."""

    def __init__(self, results: Path, cache: Path, options=None, workers: int = 1, executor: str = "local",
                 ray_address: str | None = None, cpus_per_task: float = 1.0):
        from bench.options import RunOptions
        from bench.records import ResultStore

        self.store, self.cache = ResultStore(results), Path(cache)
        self.options = options or RunOptions()
        self.batch, self.executor = max(1, int(workers)), executor
        self.ray_address, self.cpus_per_task = ray_address, cpus_per_task

    @property
    def in_process(self) -> bool:
        """Trials run one at a time in this process (what pruning needs)."""
        return self.batch == 1 and self.executor == "local"

    @property
    def measures_cpu(self) -> bool:
        """This process sees the runs' CPU time (itself or its pool's reaped workers; not a Ray cluster's)."""
        return self.executor == "local"

    def stored(self, run_id: str) -> bool:
        return self.store.has(run_id)

    def load(self, run_id: str) -> dict | None:
        return self.store.load(run_id) if self.store.has(run_id) else None

    def execute(self, specs: list[RunSpec], requested: dict, reporting: bool) -> None:
        """Run the specs (stored ones are skipped); `reporting`: in this process, with progress reporters on."""
        from bench.executors import run_specs

        # the pruner hears a run's epochs through its progress reporter, which the runner makes only with progress
        options = self.options.model_copy(update={"progress": True}) if reporting else self.options
        run_specs(specs, self.store, self.cache, options, self.batch, requested, executor=self.executor,
                  ray_address=self.ray_address, cpus_per_task=self.cpus_per_task)

    def run(self, specs: list[RunSpec], requested: dict, trial=None) -> dict[str, dict | None]:
        """Each spec's record (None: the run failed; its log says why). `trial`: report its epochs (pruning)."""
        with _reporting_to(trial) if trial is not None else contextlib.nullcontext():
            self.execute(specs, requested, trial is not None)
        return {s.run_id: self.load(s.run_id) for s in specs}


# ------------------------------------------------------------------------------------------- studies


def study_path(results: Path, suite: str) -> Path:
    return Path(results) / STUDY_FOLDER / f"{suite}.db"


def _storage(path: Path):
    """The study database as Optuna storage. Several `bench tune` processes may share one file: the schema is
    created under a file lock (two processes creating it at once: "table ... already exists"), and a writer
    waits up to a minute for another's transaction instead of failing with "database is locked"."""
    from filelock import FileLock
    from optuna.storages import RDBStorage

    path = Path(path).resolve()
    with FileLock(str(path.with_name(path.name + ".lock"))):
        return RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 60}})


def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours; Optuna's would repeat it
    return optuna


def _distribution(param: Range):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(param, FloatRange):
        return FloatDistribution(param.low, param.high, log=param.log)
    if isinstance(param, IntRange):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return CategoricalDistribution(list(param.values))


def _sampler(seed: int, study: str, number: int):
    """TPE seeded from (seed, study, trial number): a trial's sample depends on the seed and the study's history,
    never on how many processes the study took to get there."""
    from optuna.samplers import TPESampler

    return TPESampler(seed=int(json_hash(["tpe", seed, study, number], 8), 16))


def _pruner(name: str):
    import optuna

    return optuna.pruners.MedianPruner(**MEDIAN_PRUNER) if name == "median" else optuna.pruners.NopPruner()


def _study_settings(cell: Cell, seed: int, pruner: str) -> dict[str, Any]:
    """What a study is bound to at creation; a resumed study must be asked for the same."""
    return {"sampler": "TPESampler", "sampler_seed": seed, "pruner": pruner,
            "pruner_settings": MEDIAN_PRUNER if pruner == "median" else {},
            "space": {name: param.model_dump(mode="json") for name, param in cell.space.items()}}


def _stored_studies(path: Path) -> dict[str, dict[str, Any]]:
    """Study name -> user attributes of the studies already in `path` (none if it does not exist)."""
    if not path.is_file():
        return {}
    optuna = _quiet_optuna()
    return {s.study_name: dict(s.user_attrs) for s in
            optuna.get_all_study_summaries(_storage(path), include_best_trial=False)}


def _resolve_pruner(cell: Cell, stored: dict[str, Any] | None, pruner: str | None, seed: int,
                    runner: TrialRunner) -> str:
    """The pruner of the cell's study (its stored one when resuming), checked against how trials run and against
    the stored study's sampler seed and space; BenchError (one line) before any trial otherwise."""
    if stored and stored.get("pruner"):
        if pruner is not None and pruner != stored["pruner"]:
            raise BenchError(f"study {cell.study!r} was created with --pruner {stored['pruner']}; resume it with "
                             f"that pruner (or tune into another --results)")
        pruner = stored["pruner"]
        want = _study_settings(cell, seed, pruner)
        for key, what in (("sampler_seed", "--seed"), ("space", "search space")):
            if stored.get(key) != want[key]:
                shown = stored.get(key) if key == "sampler_seed" else "another one"
                raise BenchError(f"study {cell.study!r} was created with {what} {shown}; a resumed study keeps "
                                 f"its {what} (give --seed {stored.get('sampler_seed')}, or tune into another "
                                 f"--results)")
    pruner = pruner or ("median" if runner.in_process else "none")
    if pruner == "median" and not runner.in_process:
        raise BenchError("--pruner median stops a trial's run between epochs in this process: use --workers 1 "
                         "--executor local, or --pruner none")
    return pruner


@contextlib.contextmanager
def _study_lock(path: Path, study: str) -> Iterator[None]:
    """One `bench tune` per study at a time: under the lock, a trial still marked running was interrupted."""
    from filelock import FileLock, Timeout

    lock = path.parent / ".locks" / f"{json_hash(study, 16)}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock), timeout=0):
            yield
    except Timeout:
        raise BenchError(f"study {study!r} is being tuned by another process (lock {lock}); wait for it, or tune "
                         f"another cell") from None


def _requeue_interrupted(study) -> None:
    """Trials left running by an interrupted `bench tune`: marked failed (`interrupted`) and queued again with
    their settings (same run id: a record written meanwhile is reused). Through the storage: Optuna has no public
    call that fails another process's trial short of heartbeats, which would also fail trials of a slow live run."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number, **(
            {"defaults": True} if trial.user_attrs.get("defaults") else {})})


def _enqueue_defaults(study, cell: Cell) -> None:
    """The cell's own settings as the first trial (when all lie in the space; a suite may set one outside)."""
    layers = {"backbone": cell.base.backbone_settings, "method": cell.base.method_settings}
    values = {}
    for name, param in cell.space.items():
        layer, _, key = name.partition(".")
        value = get_dotted(layers[layer], key)
        if not param.contains(value):
            return
        if isinstance(param, Choice):  # Optuna stores the choice itself (0.0, not an equal 0)
            value = next(v for v in param.values if v == value)
        values[name] = value
    study.enqueue_trial(values, user_attrs={"defaults": True})


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _record_budget(study, asked: int) -> dict[str, Any]:
    """The study's budget as its user attributes: trials asked / complete / pruned / failed, CPU and wall minutes
    (the sums over its trials)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    count = {state: sum(t.state == state for t in trials) for state in TrialState}
    budget = {"trials_asked": asked, "trials_complete": count[TrialState.COMPLETE],
              "trials_pruned": count[TrialState.PRUNED],
              "trials_failed": sum(t.state == TrialState.FAIL and not t.user_attrs.get("interrupted") for t in trials),
              "cpu_minutes": sum(t.user_attrs.get("cpu_seconds", 0.0) for t in trials) / 60,
              "wall_minutes": sum(t.user_attrs.get("wall_seconds", 0.0) for t in trials) / 60}
    for key, value in budget.items():
        study.set_user_attr(key, value)
    return budget


def _settings_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k.partition('.')[2]}={v:.3g}" if isinstance(v, float) else f"{k.partition('.')[2]}={v}"
                     for k, v in values.items())


def _run_batch(study, cell: Cell, runner: TrialRunner, asked: list, requested: dict, pruning: bool, say) -> int:
    """Run one batch of asked trials, tell the study each outcome with its user attributes; returns how many
    failed."""
    from optuna.trial import TrialState

    specs = [spec for _, spec, _ in asked]
    numbers = [trial.number for trial, _, _ in asked]
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    pruned_at = None
    try:
        records = runner.run(specs, {**requested, "tune": {"study": cell.study, "trials": numbers}},
                             asked[0][0] if pruning and len(asked) == 1 else None)
    except _PrunedRun as stop:
        records, pruned_at = {}, stop.step
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    ran = {spec.run_id: run_seconds(records[spec.run_id]) for _, spec, reused in asked
           if not reused and records.get(spec.run_id) is not None}
    failed = 0
    for trial, spec, reused in asked:
        record, attrs = records.get(spec.run_id), {"run_id": spec.run_id, "reused": reused, "pruned": False}
        value = problem = None
        if pruned_at is not None:
            attrs.update(pruned=True, pruned_at_epoch=pruned_at, wall_seconds=wall, cpu_seconds=cpu,
                         cpu_source="measured")
        elif record is None:
            problem = f"the run failed (log: {Path(runner.store.root) / 'logs' / (spec.run_id + '.log')})"
            attrs.update(wall_seconds=wall / len(asked), cpu_seconds=cpu / len(asked), cpu_source="measured")
        else:
            attrs["wall_seconds"] = run_seconds(record)
            if reused:  # what producing the stored record cost: its wall time on its torch threads
                threads = (record.get("provenance", {}).get("machine") or {}).get("torch_threads") or 1
                attrs.update(cpu_seconds=attrs["wall_seconds"] * threads, cpu_source="stored record: wall x threads")
            elif runner.measures_cpu:  # a batch's CPU shared by wall time
                share = attrs["wall_seconds"] / sum(ran.values()) if sum(ran.values()) > 0 else 1 / len(ran)
                attrs.update(cpu_seconds=cpu * share, cpu_source="measured" if len(ran) == 1 else
                             f"measured, a batch of {len(ran)} shared by wall time")
            else:
                attrs.update(cpu_seconds=attrs["wall_seconds"] * runner.cpus_per_task,
                             cpu_source="wall x cpus per task")
            try:
                value, metric = validation_score(record)
                attrs["metric"] = metric
                if not math.isfinite(value):
                    problem, value = f"validation score {value}", None
            except BenchError as exc:
                problem = str(exc)
        for key, item in attrs.items():
            trial.set_user_attr(key, item)
        label = f"{cell.key} trial {trial.number}: {_settings_text(trial.params)}"
        if pruned_at is not None:
            study.tell(trial, state=TrialState.PRUNED)
            say(f"{label} -> pruned at epoch {pruned_at} ({attrs['cpu_seconds']:.0f} CPU-s)")
        elif problem is not None:
            trial.set_user_attr("problem", problem)
            study.tell(trial, state=TrialState.FAIL)
            failed += 1
            say(f"{label} -> failed: {problem}")
        else:
            study.tell(trial, value)
            say(f"{label} -> valid {attrs['metric']} {value:.4f} ({attrs['cpu_seconds']:.0f} CPU-s"
                f"{', stored run reused' if reused else ''})")
    return failed


def _tune_cell(cell: Cell, runner: TrialRunner, trials: int, seed: int, pruner: str, requested: dict,
               path: Path, say) -> None:
    optuna = _quiet_optuna()
    with _study_lock(path, cell.study):
        study = optuna.create_study(study_name=cell.study, storage=_storage(path), direction="maximize",
                                    sampler=_sampler(seed, cell.study, 0), pruner=_pruner(pruner),
                                    load_if_exists=True)
        if "sampler" not in study.user_attrs:
            base = cell.base
            for key, value in {**_study_settings(cell, seed, pruner), "suite": cell.suite,
                               "cell": {"dataset": base.dataset, "split": base.split, "backbone": base.backbone,
                                        "method": base.method, "variant": cell.variant},
                               "base_run_id": base.run_id, "seed": base.seed, "optuna": optuna.__version__}.items():
                study.set_user_attr(key, value)
        _requeue_interrupted(study)
        if not study.get_trials(deepcopy=False):
            _enqueue_defaults(study, cell)
        distributions = {name: _distribution(param) for name, param in cell.space.items()}
        while (done := _finished(study)) < trials:
            asked = []
            for _ in range(min(runner.batch, trials - done)):
                study.sampler = _sampler(seed, cell.study, len(study.get_trials(deepcopy=False)))
                trial = study.ask(distributions)
                spec = trial_spec(cell.base, trial.params)
                asked.append((trial, spec, runner.stored(spec.run_id)))
            failed = _run_batch(study, cell, runner, asked, requested, pruner == "median", say)
            _record_budget(study, trials)
            if failed == len(asked):  # a failure that repeats would loop forever; the trials are kept
                raise BenchError(f"{cell.study}: every trial of the last batch failed ({failed}); see the run logs, "
                                 f"then rerun bench tune (it resumes)")
        _record_budget(study, trials)


def tune(suite: str, profile: str | None = None, cells: Mapping[str, list[str] | None] | None = None,
         trials: int = DEFAULT_TRIALS, seed: int = 0, results: Path = Path("results"),
         cache: Path = Path("datasets/cache"), workers: int = 1, executor: str = "local", pruner: str | None = None,
         options=None, ray_address: str | None = None, cpus_per_task: float = 1.0, runner: TrialRunner | None = None,
         say=print) -> list[dict[str, Any]]:
    """Tune each chosen cell of `suite` (`cells`: {"dataset" | "split" | "backbone" | "method": names}) to
    `trials` finished trials (resuming its study); returns `tuning_summary` rows of those cells. `pruner`: median
    or none (None: the study's own when resuming, else median in-process, none otherwise). Every check (names,
    spaces, a resumed study's seed, pruner and space) runs before the first trial."""
    from bench.spec import load_suite

    loaded = load_suite(suite, profile)
    chosen = suite_cells(loaded, cells)
    idle = [c.key for c in chosen if not c.space]
    chosen = [c for c in chosen if c.space]
    if not chosen:
        raise BenchError(f"suite {loaded.name!r}: nothing to tune in {', '.join(idle)}: neither the backbone's nor "
                         f"the method's settings declare a search_space (bench.search)")
    if idle:
        say(f"nothing to tune (no search space): {', '.join(idle)}; their rows keep their settings")
    runner = runner or TrialRunner(results, cache, options, workers, executor, ray_address, cpus_per_task)
    path = study_path(results, loaded.name)
    stored = _stored_studies(path)
    pruners = {c.study: _resolve_pruner(c, stored.get(c.study), pruner, seed, runner) for c in chosen}
    path.parent.mkdir(parents=True, exist_ok=True)
    requested = {"suite": loaded.name, "profile": profile, "set": [], "argv": sys.argv[1:]}
    for cell in chosen:
        _tune_cell(cell, runner, trials, seed, pruners[cell.study], requested, path, say)
    rows = {row["study"]: row for row in tuning_summary(results, loaded.name)}
    return [rows[c.study] for c in chosen]


# ----------------------------------------------------------------------------------------- summaries


def _layered(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{"backbone.lr": x, "method.csft.lr": y} -> {"backbone": {"lr": x}, "method": {"csft": {"lr": y}}}."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        layer, _, key = name.partition(".")
        out[layer] = set_dotted(out.get(layer, {}), key, value)
    return out


def tuning_summary(results: Path, suite: str) -> list[dict[str, Any]]:
    """One row per study of `suite` (the profile-applied name, e.g. `smoke` or `smoke-paper`) in
    `<results>/tuning/<suite>.db`: the cell, trials finished (complete + pruned; `trials_asked` the last target),
    failed, CPU and wall minutes, the best validation score, its metric, trial, run id and settings (`best_params`
    flat, `best_settings` by layer), the default settings' score, pruner and sampler seed."""
    from optuna.trial import TrialState

    path = study_path(results, suite)
    if not path.is_file():
        return []
    optuna = _quiet_optuna()
    rows = []
    for summary in optuna.get_all_study_summaries(_storage(path), include_best_trial=False):
        if not summary.study_name.startswith(f"{suite}:"):
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=_storage(path))
        trials, attrs = study.get_trials(deepcopy=False), study.user_attrs
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        pruned = [t for t in trials if t.state == TrialState.PRUNED]
        best = max(complete, key=lambda t: t.value, default=None)  # ties: the earliest trial
        default = next((t for t in complete if t.user_attrs.get("defaults")), None)
        rows.append({
            "study": study.study_name, **attrs.get("cell", {}), "trials": len(complete) + len(pruned),
            "trials_asked": attrs.get("trials_asked"), "complete": len(complete), "pruned": len(pruned),
            "failed": sum(t.state == TrialState.FAIL and not t.user_attrs.get("interrupted") for t in trials),
            "cpu_minutes": sum(t.user_attrs.get("cpu_seconds", 0.0) for t in trials) / 60,
            "wall_minutes": sum(t.user_attrs.get("wall_seconds", 0.0) for t in trials) / 60,
            "best_value": best.value if best else None, "metric": best.user_attrs.get("metric") if best else None,
            "best_trial": best.number if best else None, "best_run_id": best.user_attrs.get("run_id") if best else None,
            "best_params": dict(best.params) if best else {}, "best_settings": _layered(best.params) if best else {},
            "at_edge": at_edge(best.params, best.distributions) if best else [],
            "default_value": default.value if default else None, "pruner": attrs.get("pruner"),
            "sampler": attrs.get("sampler"), "sampler_seed": attrs.get("sampler_seed"),
            "optuna": attrs.get("optuna")})
    return rows


EDGE_FRACTION = 0.05  # a best value within 5% of its range's width (log scale for log ranges) of an end


def at_edge(params: Mapping[str, Any], distributions: Mapping[str, Any]) -> list[str]:
    """The parameters whose best value lies at an end of its searched range (within EDGE_FRACTION of the
    width, on the range's scale): the optimum may lie outside what was searched, so the tuned row may still be
    below its best. Categorical parameters have no ends."""
    from optuna.distributions import FloatDistribution, IntDistribution

    out = []
    for name, value in params.items():
        dist = distributions.get(name)
        if not isinstance(dist, (FloatDistribution, IntDistribution)) or dist.high <= dist.low:
            continue
        low, high, value = (math.log(dist.low), math.log(dist.high), math.log(value)) if dist.log else (
            dist.low, dist.high, value)
        if isinstance(dist, IntDistribution) and not dist.log:  # an integer range: its end values themselves
            if value in (low, high):
                out.append(name)
        elif min(value - low, high - value) <= EDGE_FRACTION * (high - low):
            out.append(name)
    return out


def check_equal_budget(rows: list[dict[str, Any]]) -> None:
    """Cells compared with each other must have been tuned with the same budget: the same number of finished
    trials under the same pruner. BenchError naming every cell and its budget otherwise."""
    if len({(row["trials"], row["pruner"]) for row in rows}) > 1:
        budgets = "; ".join(f"{row['study']}: {row['trials']} trials, {row['cpu_minutes']:.1f} CPU-min, pruner "
                            f"{row['pruner']}" for row in rows)
        raise BenchError(f"tuning budgets differ, so the tuned rows are not comparable: {budgets}. Tune every cell "
                         f"to the same --trials with one --pruner (bench tune resumes a study)")


# -------------------------------------------------------------------------------------- tuned profile


def _diff(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The values that differ from the defaults (nested settings: their differing keys only)."""
    out = {}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            nested = _diff(value, default)
            if nested:
                out[key] = nested
        elif key not in defaults or value != default:
            out[key] = value
    return out


def _part(spec: RunSpec) -> dict[str, Any]:
    """A suite `parts` entry that runs exactly this cell with these settings (every layer's non-default values)."""
    from bench.backbones import BACKBONES
    from bench.catalog import METHODS
    from bench.data.cards import load_card
    from bench.data.splits import resolve_split_params
    from bench.encoders import EncoderSettings

    part = {"datasets": [spec.dataset], "splits": [spec.split], "backbones": [spec.backbone],
            "methods": [spec.method],
            "dataset_settings": {spec.dataset: _diff(spec.dataset_settings,
                                                     load_card(spec.dataset, {}).model_dump(mode="json"))},
            "split_settings": {spec.split: _diff(spec.split_settings, resolve_split_params(spec.split, {}))},
            "backbone_settings": _diff(spec.backbone_settings, BACKBONES[spec.backbone].defaults),
            "backbone_overrides": {},
            "method_settings": {spec.method: _diff(spec.method_settings, METHODS.defaults(spec.method))}}
    if spec.encoder is not None:
        part["encoder"] = spec.encoder
        part["encoder_settings"] = _diff(spec.encoder_settings, EncoderSettings().model_dump(mode="json"))
    return part


def tuned_profile_name(profile: str | None) -> str:
    """`tuned` for studies of a suite's default settings, `tuned-<profile>` for those of a profile."""
    return "tuned" if profile is None else f"tuned-{profile}"


def write_tuned_profile(suite: str, results: Path, profile: str | None = None, out: Path | None = None) -> Path:
    """Write the best settings of the suite's studies as its profile `tuned` (`tuned-<profile>`) into its tuned
    profiles file (bench/suites/tuned/<suite>.yaml, or `out`), beside its other tuned profiles: one part per tuned
    cell (its best trial's settings) and per cell with nothing to tune (its settings), the suite's seeds, a
    `notes` line, and per cell its `provenance` (study, trials, CPU-minutes, best validation score, pruner,
    sampler seed). Refused (BenchError) when the budgets differ (`check_equal_budget`), a cell has no complete
    trial, or the suite's settings moved since (a part must reproduce its best trial's run id)."""
    import yaml

    from bench.records import atomic_write_text
    from bench.spec import expand, load_suite, tuned_profiles_path

    loaded = load_suite(suite, profile)
    rows = tuning_summary(results, loaded.name)
    if not rows:
        raise BenchError(f"no studies of suite {loaded.name!r} in {study_path(results, loaded.name)}; run bench tune "
                         f"--suite {suite} first")
    check_equal_budget(rows)
    empty = [row["study"] for row in rows if row["best_trial"] is None]
    if empty:
        raise BenchError(f"no complete trial in {', '.join(empty)}: nothing to write for those cells")
    cells = {cell.study: cell for cell in suite_cells(loaded)}
    parts, provenance, expected = [], {}, {}
    for row in rows:
        cell = cells.get(row["study"])
        if cell is None:
            raise BenchError(f"study {row['study']!r}: the suite no longer has that cell")
        spec = trial_spec(cell.base, row["best_params"])
        if spec.run_id != row["best_run_id"]:
            raise BenchError(f"study {row['study']!r}: the suite's settings of that cell changed since it was "
                             f"tuned (its best trial was run {row['best_run_id']}, the same settings now make "
                             f"{spec.run_id}); tune it again into another --results")
        parts.append(_part(spec))
        expected[spec.run_id] = row["study"]
        provenance[cell.key] = {
            "study": row["study"], "storage": str(study_path(results, loaded.name)), "trials": row["trials"],
            "pruned": row["pruned"], "failed": row["failed"], "cpu_minutes": round(row["cpu_minutes"], 3),
            "wall_minutes": round(row["wall_minutes"], 3), "metric": f"valid {row['metric']}",
            "best_value": row["best_value"], "default_value": row["default_value"], "best_trial": row["best_trial"],
            "best_run_id": row["best_run_id"], "settings": row["best_params"], "at_edge": row["at_edge"],
            "pruner": row["pruner"],
            "sampler": row["sampler"], "sampler_seed": row["sampler_seed"], "optuna": row["optuna"]}
    tuned_keys = {cell_key for cell_key in provenance}
    for cell in cells.values():  # rows with nothing to tune stay in the table, at their settings
        if not cell.space and cell.key not in tuned_keys:
            parts.append(_part(cell.base))
            provenance[cell.key] = {"tuned": False, "reason": "no search space declared for its settings"}
    first = rows[0]
    metrics = sorted({f"valid {row['metric']}" for row in rows})
    name = tuned_profile_name(profile)
    notes = (f"tuned: {first['trials']} trials per cell (TPE seed {first['sampler_seed']}, pruner {first['pruner']}), "
             f"best of {' / '.join(metrics)}; {len(rows)} cell{'s' if len(rows) > 1 else ''} tuned")
    body = {"description": f"{loaded.description.rstrip('. ')}; settings tuned on validation (bench tune)",
            "notes": notes,
            "seeds": list(loaded.seeds), "methods": [], "grid": {}, "parts": parts, "backbone_overrides": {},
            "method_settings": {}, "split_settings": {}, "dataset_settings": {}}
    # the profile must run the best trials: at the first seed, each tuned part's run id is its best trial's
    merged = {**load_suite(suite).model_dump(), "name": f"{suite}-{name}", **body, "profiles": {}}
    try:
        runs = {s.run_id for s in expand(Suite.model_validate(merged)) if s.seed == loaded.seeds[0]}
    except Exception as exc:  # noqa: BLE001 - a profile that does not load is a bug here: say which
        raise BenchError(f"the tuned profile of {suite!r} does not load: {exc}") from None
    lost = [study for run_id, study in expected.items() if run_id not in runs]
    if lost:
        raise BenchError(f"the tuned profile would not rerun the best trials of {', '.join(lost)}")
    target = Path(out) if out is not None else tuned_profiles_path(suite)
    document = yaml.safe_load(target.read_text()) if target.is_file() else None
    document = document if isinstance(document, dict) else {}
    document.setdefault("suite", suite)
    document.setdefault("profiles", {})[name] = body
    document.setdefault("provenance", {})[name] = provenance
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# written by `bench tune --write-profile` from the studies in {study_path(results, loaded.name)};\n"
              f"# rerun it rather than edit it: `provenance` says where each cell's settings come from\n")
    atomic_write_text(target, header + yaml.safe_dump(document, sort_keys=False, width=110))
    return target


def tuned_provenance(suite: str, profile: str = "tuned") -> dict[str, Any]:
    """Cell ("dataset/split/backbone/method") -> provenance of a suite's tuned profile ({} if there is none)."""
    import yaml

    from bench.spec import tuned_profiles_path

    path = tuned_profiles_path(suite)
    document = yaml.safe_load(path.read_text()) if path.is_file() else None
    return dict(((document or {}).get("provenance") or {}).get(profile) or {})


# ------------------------------------------------------------------------------------------------ CLI


def add_parser(subparsers) -> None:
    """The `tune` subcommand (bench.cli wires it in)."""
    from bench.cli import DEFAULT_CACHE, DEFAULT_RESULTS

    tune_cmd = subparsers.add_parser(
        "tune", help="tune a suite's cells on validation, the same budget for each (Optuna TPE)",
        description="One study per cell of the suite in <results>/tuning/<suite>.db; each trial an ordinary run "
                    "at the suite's first seed; rerunning resumes the studies.")
    tune_cmd.add_argument("--suite", required=True, help="builtin suite name or a suite YAML file")
    tune_cmd.add_argument("--profile", help="a profile of the suite whose settings are tuned (e.g. paper)")
    for flag in ("dataset", "split", "backbone", "method"):
        tune_cmd.add_argument(f"--{flag}", help=f"only the suite's cells on these {flag}s (comma-separated)")
    tune_cmd.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                          help=f"finished trials per cell, the first one the cell's own settings (default "
                               f"{DEFAULT_TRIALS})")
    tune_cmd.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    tune_cmd.add_argument("--pruner", choices=PRUNERS, default=None,
                          help="median: stop hopeless trials between epochs (in-process trials only; default when "
                               "--workers 1); none: every trial runs to its end (default with parallel trials)")
    tune_cmd.add_argument("--workers", type=int, default=1, help="trials run in parallel (a pool, or Ray tasks)")
    tune_cmd.add_argument("--executor", choices=["local", "ray"], default="local", help="local pool or Ray")
    tune_cmd.add_argument("--ray-address", default=None, help="Ray cluster address (--executor ray)")
    tune_cmd.add_argument("--cpus-per-task", type=float, default=1, help="CPUs per Ray task (--executor ray)")
    tune_cmd.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N or mps (a run option)")
    tune_cmd.add_argument("--threads", type=int, default=None, help="torch threads per run (a run option)")
    tune_cmd.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                          help="run records, and the studies under <results>/tuning/")
    tune_cmd.add_argument("--cache", "--cache-dir", dest="cache", type=Path, default=DEFAULT_CACHE,
                          help="prepared data, splits, embeddings and models")
    tune_cmd.add_argument("--write-profile", action="store_true",
                          help="then write the best settings as the suite's `tuned` profile "
                               "(bench/suites/tuned/<suite>.yaml)")


def _check_number(flag: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise BenchError(f"{flag} {value}: must be between {low:.10g} and {high:.10g}")


def command(args) -> int:
    """`bench tune`: checks everything before the first trial (BenchError: one line, exit 2), tunes, prints one
    row per cell, writes the tuned profile with --write-profile. 0, or 1 when a cell's trials all failed."""
    from tabulate import tabulate

    from bench.cli import MAX_WORKERS, check_folder
    from bench.options import make_options
    from bench.runner import preflight
    from bench.spec import SEED_LIMIT, load_suite

    _check_number("--trials", args.trials, 1, MAX_TRIALS)
    _check_number("--seed", args.seed, 0, SEED_LIMIT)
    _check_number("--workers", args.workers, 1, MAX_WORKERS)
    _check_number("--cpus-per-task", args.cpus_per_task, 1e-3, MAX_WORKERS)
    loaded = load_suite(args.suite, args.profile)
    choose = {flag: getattr(args, flag).split(",") if getattr(args, flag) else None
              for flag in ("dataset", "split", "backbone", "method")}
    cells = [c for c in suite_cells(loaded, choose) if c.space]
    options = make_options({**loaded.options, **{k: getattr(args, k) for k in ("device", "threads")
                                                 if getattr(args, k) is not None}})
    check_folder(args.results, "results", "--results")
    check_folder(args.cache, "cache", "--cache")
    if cells:
        preflight([c.base for c in cells], args.cache)
    status = 0
    try:
        rows = tune(args.suite, args.profile, choose, args.trials, args.seed, args.results, args.cache, args.workers,
                    args.executor, args.pruner, options, args.ray_address, args.cpus_per_task)
    except BenchError as exc:
        if "every trial of the last batch failed" not in str(exc):
            raise
        print(f"bench: {exc}", file=sys.stderr)
        rows, status = tuning_summary(args.results, loaded.name), 1
    table = [[f"{r['dataset']}/{r['split']}/{r['backbone']}/{r['method']}", r["trials"], r["pruned"], r["failed"],
              f"{r['cpu_minutes']:.1f}", r["metric"] or "",
              "" if r["default_value"] is None else f"{r['default_value']:.4f}",
              "" if r["best_value"] is None else f"{r['best_value']:.4f}", _settings_text(r["best_params"])
              + (f" (at the edge of its range: {', '.join(r['at_edge'])})" if r["at_edge"] else "")]
             for r in rows]
    print(tabulate(table, headers=["cell", "trials", "pruned", "failed", "CPU-min", "valid metric", "default",
                                   "best", "best settings"]))
    print(f"studies: {study_path(args.results, loaded.name)}")
    if args.write_profile and status == 0:
        path = write_tuned_profile(args.suite, args.results, args.profile)
        print(f"wrote profile {tuned_profile_name(args.profile)!r}: {path} (bench run --suite {args.suite} --profile "
              f"{tuned_profile_name(args.profile)})")
    return status

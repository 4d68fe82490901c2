"""One training loop for every LLM-based method, on `accelerate`.

`train_loop` takes the trainable parameters (or param groups), an optimizer factory, a batch iterator and a
loss function; it runs optimizer steps of `grad_accum` micro-batches with optional gradient clipping, an
optional learning-rate schedule, autocast and an evaluation callback every N steps, and returns the loss
curve and timings; `BestState` is the generic model selection for its `evaluate` / `should_stop` hooks (the
parameters' state at the best validation value, the patience rule, the curve). The same loop runs on one CPU (`Accelerator(cpu=True)`), one GPU, or several GPUs under
`accelerate launch`.

Numerics: on one process the loop is exactly a plain torch loop (`accelerator.backward` is `loss.backward`,
the prepared optimizer steps the wrapped one), so CPU results stay bit-identical to the loops it replaced.
Batches are the caller's (an iterator, never a prepared DataLoader), so their order is the caller's seeded
order. The loss functions call sub-modules (a decoder, a two-row head) rather than a wrapper's forward, which
DistributedDataParallel needs; with several processes the gradients are averaged with `accelerator.reduce`
instead, and each process should iterate over its own share of the batches.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError
from bench.progress import current as current_progress

_END = object()  # what `next` returns once the batches are exhausted


@dataclass
class TrainResult:
    """What one training run did: the loss of every optimizer step, its seconds and input tokens, the total
    seconds, and the evaluation callback's results as (step, value)."""

    losses: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    seconds: float = 0.0
    evaluations: list[tuple[int, Any]] = field(default_factory=list)
    stopped_early: bool = False  # `should_stop` ended the loop before the batches or `steps` did

    @property
    def steps(self) -> int:
        return len(self.losses)


def make_accelerator(device: str = "cpu"):
    """An Accelerator for `device` (cpu=True on the CPU; no mixed precision: autocast is the loop's own)."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cpu = torch.device(device).type == "cpu"
    try:
        return Accelerator(cpu=cpu, mixed_precision="no")
    except ValueError:
        # accelerate's state is a per-process singleton: a single process that trained on the GPU and now
        # trains on the CPU (tests do) must reset it; under `accelerate launch` devices never change
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(cpu=cpu, mixed_precision="no")


def shuffled_batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless micro-batches of indices: shuffled epochs (torch.Generator seeded by `seed`), no index twice
    in one batch; the ragged tail of each epoch is dropped."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        if n <= batch_size:
            yield order
            continue
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def epoch_batches(n: int, batch_size: int, epochs: int, rng) -> Iterator[Any]:
    """`epochs` passes over range(n), each in the order `rng.permutation(n)` (numpy Generator), in batches
    of `batch_size` (the last one of a pass may be smaller)."""
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, len(order), batch_size):
            yield order[start:start + batch_size]


SCHEDULES = ("constant", "linear", "cosine")


def schedule_factor(step: int, warmup_steps: int, total_steps: int, kind: str = "linear") -> float:
    """The learning-rate factor of optimizer step `step` (0-based): a linear warmup over `warmup_steps`, then
    constant, linear decay to 0 or cosine decay to 0 at `total_steps` (HF Trainer's schedules)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return max(0.0, 1.0 - progress)


def scheduler_factory(warmup_steps: int, total_steps: int, kind: str = "linear") -> Callable | None:
    """`make_scheduler` for `train_loop` (None: a constant rate without warmup, the plain optimizer)."""
    if kind not in SCHEDULES:
        from bench.errors import UnknownChoiceError

        raise UnknownChoiceError("learning-rate schedule", kind, SCHEDULES)
    if kind == "constant" and warmup_steps == 0:
        return None

    def make(optimizer):
        import torch

        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: schedule_factor(step, warmup_steps, total_steps, kind))

    return make


def resolve_warmup(total_steps: int, warmup_steps: int = 0, warmup_ratio: float = 0.0) -> int:
    """Warmup steps of a `total_steps` budget: `warmup_steps` when > 0, else ceil(warmup_ratio x total_steps)
    (HF Trainer's rule: the steps win over the ratio)."""
    if warmup_steps > 0:
        return int(warmup_steps)
    return math.ceil(warmup_ratio * total_steps) if warmup_ratio > 0 else 0


def spread_steps(total_steps: int, n: int) -> list[int]:
    """`n` evaluation steps (1-based) spread evenly over `total_steps` optimizer steps, the last one last:
    ceil(k x total / n) for k = 1..n (fewer, distinct, when n > total_steps)."""
    if n <= 0 or total_steps <= 0:
        return []
    return sorted({-(-k * total_steps // n) for k in range(1, n + 1)})


def _parameters(params: Iterable) -> list:
    params = list(params)
    if params and isinstance(params[0], dict):
        return [p for group in params for p in group["params"]]
    return params


def train_loop(params: Iterable, make_optimizer: Callable, batches: Iterator, loss_fn: Callable, *,
               steps: int | None = None, grad_accum: int = 1, max_grad_norm: float = 0.0,
               make_scheduler: Callable | None = None, model=None, device: str = "cpu",
               autocast_dtype=None, eval_every: int = 0, evaluate: Callable[[int], Any] | None = None,
               check_finite: bool = False, hint: str = "", desc: str = "train", progress: bool = False,
               should_stop: Callable[[], bool] | None = None, eval_steps: Collection[int] | None = None
               ) -> TrainResult:
    """Optimise `params` (tensors or param-group dicts) with `make_optimizer(params)`.

    Each step takes `grad_accum` batches from `batches`; `loss_fn(batch)` returns the loss, or (loss,
    number of input tokens). `steps` None: until `batches` is exhausted. `max_grad_norm` > 0 clips the
    gradient norm; `make_scheduler(optimizer)` gives a scheduler stepped once per step; `model` is put in
    train mode for every loss and in eval mode at the end; `autocast_dtype` (e.g. torch.bfloat16) turns on
    autocast; `evaluate(step)` runs after every `eval_every`-th step and after each step (1-based) in
    `eval_steps` (evaluations spread over a budget that `eval_every` does not divide), and `should_stop()`
    (early stopping on validation) after each evaluation ends the loop when true; `check_finite` raises a
    BenchError (naming `desc`, the step and `hint`) on a non-finite loss.
    """
    import torch
    from tqdm.auto import tqdm

    params = list(params)  # a generator (model.parameters()) would be used up by the optimizer
    accelerator = make_accelerator(device)
    optimizer = accelerator.prepare(make_optimizer(params))
    # the raw optimizer's schedule: a prepared scheduler would step once per process
    scheduler = make_scheduler(optimizer.optimizer) if make_scheduler is not None else None
    flat = _parameters(params)
    optimizer.zero_grad(set_to_none=True)  # gradients left by earlier training never reach the first step
    device_type = torch.device(device).type

    def autocast():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=autocast_dtype)

    def micro_batch(batch) -> tuple[float, int]:
        if model is not None:
            model.train()
        with autocast():
            out = loss_fn(batch)
        loss, n_tokens = out if isinstance(out, tuple) else (out, 0)
        if check_finite and not torch.isfinite(loss):
            raise BenchError(f"{desc}: loss is {float(loss)} at step {result.steps}" + (f"; {hint}" if hint else ""))
        accelerator.backward(loss / grad_accum if grad_accum > 1 else loss)
        return float(loss.detach()) / grad_accum, int(n_tokens)

    result = TrainResult()
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress)
    reporter = current_progress()  # the run's console line (bench.progress): step k / steps, loss, last valid
    reporter.begin(desc)
    start = time.perf_counter()
    while steps is None or result.steps < steps:
        t0 = time.perf_counter()
        total, tokens = 0.0, 0
        for micro in range(grad_accum):
            batch = next(batches, _END)
            if batch is _END:
                if micro == 0 and steps is None:  # the batches ended with the last step
                    break
                raise BenchError(f"{desc}: the batches ran out at step {result.steps + 1}")
            loss, n_tokens = micro_batch(batch)
            total, tokens = total + loss, tokens + n_tokens
        else:
            _step(accelerator, optimizer, scheduler, flat, max_grad_norm)
            if device_type == "cuda":
                torch.cuda.synchronize()
            result.losses.append(total)
            result.step_seconds.append(time.perf_counter() - t0)
            result.step_tokens.append(tokens)
            bar.update()
            bar.set_postfix(loss=f"{total:.4f}")
            due = (eval_every > 0 and result.steps % eval_every == 0) or (eval_steps is not None
                                                                           and result.steps in eval_steps)
            if evaluate is not None and due:
                result.evaluations.append((result.steps, evaluate(result.steps)))
            last = result.evaluations[-1][1] if result.evaluations else None
            reporter.update(desc, result.steps, steps, unit="step", loss=total,
                            valid=last if isinstance(last, (int, float)) else None)
            if evaluate is not None and due:
                if should_stop is not None and should_stop():
                    result.stopped_early = True
                    break
            continue
        break
    bar.close()
    result.seconds = time.perf_counter() - start
    if model is not None:
        model.eval()
    return result


def _step(accelerator, optimizer, scheduler, params: list, max_grad_norm: float) -> None:
    """Average gradients over processes (several only), clip, step, schedule, clear the gradients."""
    if accelerator.num_processes > 1:
        for p in params:
            if p.grad is not None:
                p.grad = accelerator.reduce(p.grad, reduction="mean")
    if max_grad_norm > 0:
        accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)


class BestState:
    """The state of `params` at the best validation value seen, for `train_loop`'s `evaluate` and
    `should_stop` hooks (model selection inside a fixed step budget).

    `value_fn()` returns the validation value of the current parameters (lower is better with mode "min",
    higher with "max"; a non-finite value is never better than a finite one). Each `evaluate(step)` records
    (step, value) and, on a strict improvement, copies the parameters (to the CPU with `offload`, so a full
    fine-tuning does not hold a second copy of the model on the accelerator); `should_stop()` is the patience
    rule (`patience` evaluations in a row without an improvement; 0: never); `finish(steps, stopped_early)`
    evaluates the last step if the schedule did not and loads the best state back into the parameters (when
    no evaluation gave a finite value, the last state stays).
    """

    def __init__(self, params: Iterable, value_fn: Callable[[], float], *, mode: str = "min", patience: int = 0,
                 metric: str = "valid_loss", offload: bool = True):
        if mode not in ("min", "max"):
            from bench.errors import UnknownChoiceError

            raise UnknownChoiceError("selection mode", mode, ("min", "max"))
        self.params = _parameters(params)
        self.value_fn, self.mode, self.patience = value_fn, mode, int(patience)
        self.metric, self.offload = metric, offload
        self.curve: list[dict] = []
        self.best_value: float | None = None
        self.best_step = 0
        self.best_state: list | None = None
        self.since_best = 0  # evaluations after the best one (patience)
        self.stopped_early = False
        self.steps_run = 0

    def _key(self, value: float) -> float:
        if not math.isfinite(value):
            return math.inf
        return value if self.mode == "min" else -value

    def evaluate(self, step: int) -> float | None:
        import torch

        value = float(self.value_fn())
        finite = math.isfinite(value)
        self.curve.append({"step": int(step), "value": value if finite else None})
        if self.best_state is None or self._key(value) < self._key(
                self.best_value if self.best_value is not None else math.nan):
            self.best_value, self.best_step = (value if finite else None), int(step)
            with torch.no_grad():
                self.best_state = [p.detach().to("cpu", copy=True) if self.offload else p.detach().clone()
                                   for p in self.params]
            self.since_best = 0
        else:
            self.since_best += 1
        return value if finite else None

    def should_stop(self) -> bool:
        """The patience rule: `patience` evaluations in a row without an improvement (never with 0)."""
        return self.patience > 0 and self.since_best >= self.patience

    def finish(self, steps: int, stopped_early: bool = False) -> None:
        """Evaluate step `steps` (the last one run) unless it was, then load the best state."""
        import torch

        self.stopped_early, self.steps_run = bool(stopped_early), int(steps)
        if not self.curve or self.curve[-1]["step"] != steps:
            self.evaluate(steps)
        if self.best_value is None:  # no finite value at all: nothing to select on, the last state stays
            self.best_step = int(steps)
            return
        with torch.no_grad():
            for p, best in zip(self.params, self.best_state):
                p.copy_(best.to(p.device))

    def summary(self) -> dict:
        """The selection as recorded: the metric, the curve [{step, value}], the best step and value,
        `evaluations` (how many ran), `early_stopped` (the best state is not the last step's: what
        bench/report/convergence.py reads as converged), `stopped_early` (the patience rule ended the
        training before its last step) and `steps_run`."""
        last = self.curve[-1]["step"] if self.curve else 0
        return {"metric": self.metric, "mode": self.mode, "curve": list(self.curve), "best_step": self.best_step,
                "best_value": self.best_value, "evaluations": len(self.curve),
                "early_stopped": self.best_step < last, "stopped_early": self.stopped_early,
                "steps_run": self.steps_run, "patience": self.patience}

"""How every benchmark here measures: CPU seconds of this process (user + system, all its threads), torch fixed
to a stated number of threads, one warm-up round left out, then rounds whose order rotates (a shared machine's
speed drifts: each contender sees the same drift), the median per contender, and a ratio to an anchor (RecBole,
a plain loop, the model's FLOP bound) asserted against a stated bound. A benchmark can fail.

CPU time, not wall time: the wall clock counts sleeps (RecBole's `run_recbole` sleeps a second in
`psutil.cpu_percent(interval=1)`) and other jobs on the machine; the CPU time of one thread counts the work done.
It still moves with cache and memory contention on a shared machine, hence rounds and medians.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
from collections.abc import Callable, Iterator
from typing import Any

THREADS = int(os.environ.get("BENCH_THREADS", "1"))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (every thread) and of its children waited for (a run's
    `git` calls for its record, a pool's workers): what a contender costs, wherever it spends it."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def fixed_threads(n: int = THREADS) -> Iterator[int]:
    """torch's intra-op threads fixed to `n` inside the block (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(CPU seconds, result) of one call."""
    start = cpu_seconds()
    result = fn()
    return cpu_seconds() - start, result


def alternate(contenders: dict[str, Callable[[int], Any]], rounds: int, warmup: int = 1
              ) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Call every contender (`fn(round)`) once per round, the order rotated each round; `warmup` rounds first,
    left out. Returns (CPU seconds per contender per timed round, results per contender per timed round)."""
    names = list(contenders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, list[Any]] = {name: [] for name in names}
    for round_ in range(warmup + rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            spent, result = timed(lambda fn=contenders[name], r=round_: fn(r))
            if round_ >= warmup:
                seconds[name].append(spent)
                results[name].append(result)
    return seconds, results


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(seconds: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of numerator / denominator (each round's pair saw the same machine state)."""
    return median([a / b for a, b in zip(seconds[numerator], seconds[denominator])])


def check(benchmark, name: str, value: float, bound: float, *, at_most: bool = True, **info: Any) -> None:
    """Record `name` = value with its bound (and `info`) in the benchmark's extra_info, print one line, and
    assert value <= bound (`at_most`) or value >= bound."""
    check_all(benchmark, [(name, value, bound, at_most)], **info)


def check_all(benchmark, figures: list[tuple[str, float, float, bool]], **info: Any) -> None:
    """`check` of several (name, value, bound, at_most) figures: all recorded and printed, then all asserted."""
    benchmark.extra_info.update({"threads": THREADS, "load_1min": os.getloadavg()[0], **info})
    failed = []
    for name, value, bound, at_most in figures:
        benchmark.extra_info.update({name: value, f"{name}_bound": bound})
        relation = "<=" if at_most else ">="
        print(f"\n{name} = {value:.3f} (bound {relation} {bound})", end="")
        if not (value <= bound if at_most else value >= bound):
            failed.append(f"{name} = {value:.3f}, bound {relation} {bound}")
    print("; " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()))
    if not getattr(benchmark, "_mode", None):  # registered once; the figures live in extra_info
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert not failed, "; ".join(failed)

"""Run options: how a run is executed, never what it computes. They are not settings: they stay out of
the run id and are written to the record's provenance (`provenance.options`).

Every option here must leave a run's metrics unchanged, except `threads` and `device`, whose effect is
floating-point only (LightGCN parameters differ by ~3e-8 between 1 and 2 torch threads): both are
recorded, and `bench verify` reports them when two runs of one id differ.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.errors import BenchError

DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


class RunOptions(BaseModel):
    """How to run: device, torch threads per run, progress bars, batch sizes that do not change results."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = "cpu"
    threads: int | None = Field(None, ge=1, le=4096)  # torch threads per run; None: cpu_count // workers (>= 1)
    progress: bool = True  # inner progress bars (LLM stages, PtE generation) in the run's log
    eval_batch_size: int = Field(1_000_000, ge=1, le=10**12)  # RecBole full-sort batch, in (users x items) cells
    llm_eval_batch_size: int = Field(16, ge=1, le=1_000_000)  # Yes/No pairs scored per LLM forward pass
    prefix_cache: bool = True  # score a user's candidates against one cached prompt prefix (same outputs)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(str(value)):
            raise ValueError("must be one of cpu, cuda, cuda:N, mps")
        return value

    def torch_threads(self, workers: int = 1) -> int:
        """The torch thread count of one run: `threads`, else the machine's cores split over the workers."""
        return self.threads or max(1, (os.cpu_count() or 1) // max(1, workers))


def check_device(device: str) -> None:
    """BenchError (one line) for a CUDA device torch cannot see."""
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device {device!r} requested but torch sees no CUDA GPU; use --device cpu")


def resolve_device(device: str = "auto") -> str:
    """The device a run uses, resolved once (`bench.runner` puts it in `RunContext.device`): 'auto' -> 'cuda'
    when torch sees a GPU, else 'cpu'; an explicit CUDA device must exist. Under `accelerate launch` with
    several processes, 'auto' / 'cuda' name this process's own GPU (cuda:LOCAL_RANK)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        check_device(device)
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


OPTION_NAMES = tuple(RunOptions.model_fields)


def make_options(values: dict[str, Any]) -> RunOptions:
    """RunOptions from CLI values; BenchError naming the option, the value and what is valid."""
    unknown = sorted(set(values) - set(OPTION_NAMES))
    if unknown:
        raise BenchError(f"unknown run option {unknown[0]!r}; valid options: {', '.join(OPTION_NAMES)}")
    for key, value in values.items():  # true / false is no number (pydantic would read it as 1 / 0)
        if isinstance(value, bool) and RunOptions.model_fields[key].annotation is not bool:
            raise BenchError(f"run option {key}={value!r}: a number is needed, not true / false")
    try:
        return RunOptions.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(map(str, error["loc"]))
        raise BenchError(f"run option {key}={values.get(key)!r}: {error['msg'].removeprefix('Value error, ')}") \
            from None

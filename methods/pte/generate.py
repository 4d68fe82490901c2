"""PtE (paper 004) generation plumbing: versioned prompt files, profile requests with per-profile seeds,
and the resumable on-disk profile store (the chat generator itself is `methods.llm.generate`).

Every generated profile is stored with everything it depends on (model hash, prompt-template hash, the
rendered prompt, sampling settings, seed) and looked up by the hash of those; the store is a folder of
JSONL chunk files, each written atomically after a generation batch, so an interrupted stage resumes
without regenerating finished profiles and concurrent processes never corrupt each other's chunks.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.hashing import json_hash, sha256_hex
from bench.progress import current as current_progress
from methods.llm.generate import Generator, Sampling

PROMPT_DIR = Path(__file__).parent / "prompts"
PROMPT_NAMES = ("system", "user_init", "item", "user_refine", "item_raw")


class PromptSet:
    """The prompt files of a folder (`system.txt`, `user_init.txt`, ...), each with its content hash."""

    def __init__(self, folder: Path | str = PROMPT_DIR, noun: str = "items"):
        self.folder = Path(folder)
        self.noun = noun  # what the catalogue holds ("movies"), filled into every {noun}
        self.templates: dict[str, str] = {}
        for name in PROMPT_NAMES:
            path = self.folder / f"{name}.txt"
            if not path.exists():
                raise BenchError(f"PtE prompt file {path} is missing (needs {', '.join(PROMPT_NAMES)})")
            self.templates[name] = path.read_text(encoding="utf-8").strip()
        self.system = self.templates["system"].format(noun=noun)
        self.hashes = {name: sha256_hex(text, 16) for name, text in self.templates.items()}
        self.hashes["system"] = sha256_hex(self.system, 16)  # the rendered system prompt (noun included)

    def render(self, name: str, **fields: str) -> str:
        return self.templates[name].format(noun=self.noun, **fields)


CHECKSUM_FIELD = "_sha256"  # per record line: sha256 of the record's canonical JSON (without this field)
FOOTER_FIELD = "_chunk"  # the last line of a chunk: {"_chunk": {"version": 1, "records": n}}
CHUNK_VERSION = 1


def _record_checksum(record: dict) -> str:
    return json_hash(record, ensure_ascii=False)


def read_chunk(path: Path) -> tuple[list[dict], str | None]:
    """The records of a chunk file, and None; or ([], why the chunk is unusable).

    A chunk written by `ProfileStore.put_many` has a checksum on every record line and a footer line with
    the record count: it is unusable when a line does not parse or fails its checksum, or the footer is
    missing (truncated) or counts other records. A chunk from before checksums (no checksum, no footer) is
    accepted when every line parses as a record with a key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return [], f"unreadable ({err})"
    lines = [line for line in text.split("\n") if line.strip()]
    records: list[dict] = []
    footer = None
    checked = 0
    for number, line in enumerate(lines, 1):
        if footer is not None:
            return [], f"line {number} follows the chunk's footer"
        try:
            entry = json.loads(line)
        except ValueError:
            return [], f"line {number} does not parse (truncated?)"
        if not isinstance(entry, dict):
            return [], f"line {number} is not a JSON object"
        if FOOTER_FIELD in entry:
            footer = entry[FOOTER_FIELD]
            continue
        if CHECKSUM_FIELD in entry:
            checksum = entry.pop(CHECKSUM_FIELD)
            if checksum != _record_checksum(entry):
                return [], f"line {number} fails its checksum"
            checked += 1
        if not isinstance(entry.get("key"), str):
            return [], f"line {number} has no profile key"
        records.append(entry)
    if footer is None and checked:
        return [], "no footer line (truncated?)"
    if footer is not None:
        if not isinstance(footer, dict) or footer.get("version") != CHUNK_VERSION:
            return [], f"footer is not a version-{CHUNK_VERSION} footer"
        if footer.get("records") != len(records) or checked != len(records):
            return [], (f"footer counts {footer.get('records')} records, the chunk holds {len(records)} "
                        f"({checked} with a checksum)")
    return records, None


class ProfileStore:
    """Generated profiles on disk: a folder of JSONL chunks, one record per (request key) line.

    Every record line carries a checksum and every chunk ends with a footer counting its records; a chunk
    that fails (`read_chunk`) is reported on one stderr line, renamed aside (`<name>.corrupt`) and skipped,
    so its profiles count as missing and are generated again on demand.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict] = {}
        self._seen_files: set[str] = set()
        self.skipped: list[str] = []  # chunk files that failed their checks
        self.refresh()

    def refresh(self) -> None:
        for path in sorted(self.folder.glob("chunk-*.jsonl")):
            if path.name in self._seen_files:
                continue
            self._seen_files.add(path.name)
            records, problem = read_chunk(path)
            if problem is not None:
                self._set_aside(path, problem)
                continue
            for record in records:
                self._records[record["key"]] = record

    def _set_aside(self, path: Path, problem: str) -> None:
        from bench.hashing import cache_warning

        self.skipped.append(path.name)
        try:
            os.replace(path, path.with_name(path.name + ".corrupt"))
            action = f"skipped (moved to {path.name}.corrupt); its profiles will be generated again"
        except OSError:
            action = "skipped; its profiles will be generated again"
        cache_warning(path, problem, action)

    def get(self, key: str) -> dict | None:
        return self._records.get(key)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self):
        """Every stored profile record (key, entity, template, hashes, sampling, seed, prompt, text, tokens)."""
        return iter(self._records.values())

    def put_many(self, records: list[dict]) -> None:
        if not records:
            return
        name = f"chunk-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"
        fd, tmp = tempfile.mkstemp(prefix=".chunk-", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for record in records:
                    line = {**record, CHECKSUM_FIELD: _record_checksum(record)}
                    fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                fh.write(json.dumps({FOOTER_FIELD: {"version": CHUNK_VERSION, "records": len(records)}}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._seen_files.add(name)
        for record in records:
            self._records[record["key"]] = record


@dataclass
class Request:
    """One profile to generate: which entity, which candidate, from which template and rendered prompt."""

    entity: str
    template: str
    prompt: str
    seed: int
    sampling: Sampling


def request_key(model_hash: str, prompt_hash: str, system_hash: str, request: Request) -> str:
    parts = {"model": model_hash, "template": request.template, "template_hash": prompt_hash,
             "system_hash": system_hash, "prompt": request.prompt, "seed": request.seed,
             "sampling": request.sampling.as_dict()}
    return json_hash(parts, compact=False, ensure_ascii=False)


@dataclass
class GenerationStats:
    requested: int = 0
    generated: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0
    batches: int = 0
    # the cost of every profile used, when it was first generated (also on a full cache hit)
    first_tokens: int = 0
    first_seconds: float = 0.0

    def add(self, other: GenerationStats) -> None:
        for name in ("requested", "generated", "tokens", "prompt_tokens", "seconds", "batches", "first_tokens",
                     "first_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("requested", "generated", "tokens", "prompt_tokens", "seconds",
                                             "batches", "first_tokens", "first_seconds")}
        out["tokens_per_second"] = self.tokens / self.seconds if self.generated and self.seconds > 0 else None
        out["first_tokens_per_second"] = self.first_tokens / self.first_seconds if self.first_seconds > 0 else None
        return out


def run_requests(requests: list[Request], generator: Generator, prompts: PromptSet, store: ProfileStore,
                 batch_size: int, desc: str = "profiles", progress: bool = True) -> tuple[list[str], GenerationStats]:
    """Texts for every request, generating (in batches, longest prompts first) only those not in the store."""
    from tqdm.auto import tqdm

    model_hash = generator.fingerprint()
    keys = [request_key(model_hash, prompts.hashes[r.template], prompts.hashes["system"], r) for r in requests]
    store.refresh()  # another process may have finished some
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if store.get(key) is None:
            first.setdefault(key, i)  # identical requests are generated once
    todo = list(first.values())
    todo.sort(key=lambda i: -len(requests[i].prompt))
    stats = GenerationStats(requested=len(requests))
    bar = tqdm(total=len(todo), desc=desc, unit="profile", disable=not progress or not todo)
    reporter = current_progress()  # the run's console line (bench.progress): profiles generated / to generate
    reporter.begin(desc)
    start_all = time.perf_counter()
    for start in range(0, len(todo), batch_size):
        rows = todo[start:start + batch_size]
        by_sampling: dict[Sampling, list[int]] = {}
        for i in rows:
            by_sampling.setdefault(requests[i].sampling, []).append(i)
        records = []
        for sampling, group in by_sampling.items():
            t0 = time.perf_counter()
            outputs = generator.generate(prompts.system, [requests[i].prompt for i in group],
                                         [requests[i].seed for i in group], sampling)
            seconds = time.perf_counter() - t0
            stats.prompt_tokens += int(getattr(generator, "last_prompt_tokens", 0))
            for i, (text, n_tokens) in zip(group, outputs):
                r = requests[i]
                records.append({"key": keys[i], "entity": r.entity, "template": r.template,
                                "template_hash": prompts.hashes[r.template], "system_hash": prompts.hashes["system"],
                                "model_hash": model_hash, "sampling": sampling.as_dict(), "seed": r.seed,
                                "prompt": r.prompt, "text": text, "tokens": int(n_tokens),
                                "batch_seconds": seconds, "batch_size": len(group)})
                stats.tokens += int(n_tokens)
            stats.batches += 1
        store.put_many(records)
        stats.generated += len(records)
        bar.update(len(rows))
        reporter.update(desc, stats.generated, len(todo), unit="profile")
    bar.close()
    stats.seconds = time.perf_counter() - start_all
    for key in dict.fromkeys(keys):
        record = store.get(key)
        stats.first_tokens += int(record.get("tokens", 0))
        stats.first_seconds += float(record.get("batch_seconds", 0.0)) / max(int(record.get("batch_size", 1)), 1)
    return [store.get(key)["text"] for key in keys], stats

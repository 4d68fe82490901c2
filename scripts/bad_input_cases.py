"""Run the bad-input and fault cases of issue 25 (and the earlier ones of tests/test_bad_input.py) through the
real CLI (`python -m bench ...`, one process per case) in scratch folders, and print a Markdown table: case,
exit code, expected exit code, first line of stderr (progress bars skipped) and, for cases whose point is not
an error, what was checked. Exit 1 when a case exits with another code than expected.

    python scripts/bad_input_cases.py            # a few minutes on 2 CPU cores; the scratch folder is removed
    python scripts/bad_input_cases.py --keep     # keep it (its path is printed)

Everything is written under one temporary folder: tiny synthetic data (an atomic data set of 40 users and 30
items, a ctr-shaped one over 20 months), a tiny random Llama (a word-level tokenizer; no download), results and
caches. A read-only or full folder is a tmpfs mounted in a private mount namespace (`unshare -m`, as root);
elsewhere a read-only folder is chmod 555 and a full one is simulated with BENCH_MIN_FREE_MB.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TIMEOUT_S = 300


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: int = 2
    env: dict[str, str] = field(default_factory=dict)
    wrap: list[str] = field(default_factory=list)  # a command the bench process runs under (unshare ...)
    check: object = None  # callable(result) -> str: what was checked, for cases whose point is not the error
    before: object = None  # callable() run just before the case


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float


def run_bench(argv: list[str], env: dict[str, str] | None = None, wrap: list[str] | None = None) -> Result:
    start = time.perf_counter()
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                **(env or {})}
    command = [*(wrap or []), PYTHON, "-m", "bench", *argv]
    try:
        proc = subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=TIMEOUT_S)
        return Result(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)
    except subprocess.TimeoutExpired as exc:
        return Result(124, exc.stdout or "", f"(timed out after {TIMEOUT_S} s)", time.perf_counter() - start)


PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+")  # a tqdm line: not what a case reports


def first_line(text: str) -> str:
    """The first line of `text` that is not a progress bar."""
    lines = [line for line in re.split(r"[\r\n]", text) if line.strip() and not PROGRESS_BAR.search(line)]
    return lines[0].strip() if lines else ""


# ------------------------------------------------------------------------------------------- fixtures
def write_atomic(folder: Path, stem: str, inter_rows: list[str], item_rows: list[str],
                 inter_header: str = "user_id:token\titem_id:token\trating:float\ttimestamp:float",
                 item_header: str = "item_id:token\tname:token_seq") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.inter").write_text("\n".join([inter_header, *inter_rows]) + "\n", encoding="utf-8")
    (folder / f"{stem}.item").write_text("\n".join([item_header, *item_rows]) + "\n", encoding="utf-8")
    return folder


def tiny_rows(months: float = 0.0, users: int = 40, items: int = 30, per_user: int = 10) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    month = 365.25 / 12 * 86400
    for u in range(1, users + 1):
        for t, i in enumerate(rng.choice(np.arange(1, items + 1), size=per_user, replace=False)):
            # `months`: each user's ratings spread over the whole span (a ctr_temporal split needs 10 + 5 + 5)
            stamp = (1000 * u + t) if not months else 1e9 + (t + (u % 5) / 5) * months / (per_user - 1) * month
            rows.append(f"{u}\t{i}\t{int(rng.integers(1, 6))}\t{stamp:.0f}")
    return rows


def item_rows(items: int = 30, missing: int = 0) -> list[str]:
    return [f"{i}\t{'' if i <= missing else f'Movie {i}'}" for i in range(1, items + 1)]


def card(path: Path, name: str, data: Path, extra: str = "") -> Path:
    path.write_text(f'name: "{name}"\nloader: atomic\npath: {data}\ntext_template: "{{title}}"\n'
                    f"text_fields:\n  title: name\n{extra}", encoding="utf-8")
    return path


def make_tiny_lm(folder: Path) -> Path:
    """A 2-layer Llama with a word-level tokenizer over the prompts' words (" Yes" / "No" single tokens)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    sys.path.insert(0, str(ROOT))
    from methods.collm import model as cm

    text = cm.COLLM_PROMPT + cm.TEXT_PROMPT + " ".join(f'"Movie {i}",' for i in range(40)) + " Yes No Maybe"
    words = sorted(set(re.findall(r"\w+|[^\w\s]+", text)))
    vocab = {t: i for i, t in enumerate(["<unk>", "<pad>", "</s>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && umount /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def folder_fault(folder: Path, kind: str, mount: bool) -> tuple[list[str], dict[str, str]]:
    """(wrap, env) that make `folder` read-only ("ro") or full ("full") for the bench process only."""
    folder.mkdir(parents=True, exist_ok=True)
    if mount:
        options = "ro,size=1m" if kind == "ro" else "size=1m"
        return ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o {options} tmpfs "{folder}" && exec "$0" "$@"'], {}
    if kind == "ro":
        folder.chmod(0o555)
        return [], {}
    return [], {"BENCH_MIN_FREE_MB": str(10**9)}  # simulated: more than any disk has free


# ------------------------------------------------------------------------------------------- the cases
def build_cases(tmp: Path) -> list[Case]:
    mount = can_mount()
    data = tmp / "data"
    tiny = write_atomic(data / "tiny", "tiny", tiny_rows(), item_rows())
    tiny_card = card(tmp / "tiny.yaml", "tiny", tiny)
    pipe_card = card(tmp / "pipe.yaml", "tiny|pipe", tiny)
    missing = write_atomic(data / "missing", "missing", tiny_rows(), item_rows(missing=3))
    missing_card = card(tmp / "missing.yaml", "missing", missing)
    ctr = write_atomic(data / "ctr", "ctr", tiny_rows(months=20), item_rows())
    ctr_card = card(tmp / "ctr.yaml", "ctr", ctr)
    header = write_atomic(data / "header", "header", [
        "1\t1", "1\t2", "user_id:token\titem_id:token", "2\t1"], item_rows(),
        inter_header="user_id:token\titem_id:token")
    header_card = card(tmp / "header.yaml", "header", header)
    latin = write_atomic(data / "latin", "latin", tiny_rows(), item_rows())
    with open(latin / "latin.item", "ab") as handle:
        handle.write(b"31\tCaf\xe9 (1999)\n")
    latin_card = card(tmp / "latin.yaml", "latin", latin)
    dangling = write_atomic(data / "dangling", "dangling", tiny_rows(), item_rows())
    (dangling / "notes.txt").symlink_to(tmp / "gone.txt")
    dangling_card = card(tmp / "dangling.yaml", "dangling", dangling)
    bad_card = tmp / "latin1-card.yaml"
    bad_card.write_bytes(b"name: caf\xe9\nloader: atomic\npath: " + str(tiny).encode() + b"\n")
    not_model = tmp / "not-a-model"
    not_model.mkdir()
    (not_model / "README.txt").write_text("no model here\n")
    lm = make_tiny_lm(tmp / "tiny-lm")
    suites = tmp / "suites"
    suites.mkdir()
    (suites / "escape.yaml").write_text("name: ../../escaped\ndatasets: [ml-100k]\nsplits: [temporal_loo]\n"
                                        "backbones: [mf]\nmethods: [random]\n")
    (suites / "latin1.yaml").write_bytes(b"name: s\n# r\xe9sum\xe9\ndatasets: [ml-100k]\n")
    (suites / "pipe.yaml").write_text(f"name: pipe\ndatasets: ['{pipe_card}']\nsplits: [temporal_loo]\n"
                                      "backbones: [mf]\nmethods: [random]\nseeds: [0]\n"
                                      "backbone_settings: {epochs: 1}\n")
    (suites / "tiny.yaml").write_text(f"name: tiny\ndatasets: ['{tiny_card}']\nsplits: [temporal_loo]\n"
                                      "backbones: [mf]\nmethods: [random]\nseeds: [0]\n"
                                      "backbone_settings: {epochs: 1}\n")
    (suites / "both.yaml").write_text(f"name: both\ndatasets: ['{tiny_card}']\nsplits: [temporal_loo]\n"
                                      "backbones: [mf]\nmethods: [llminit-var]\nseeds: [0]\n"
                                      "backbone_settings: {epochs: 1}\n")

    def folders(name: str) -> list[str]:
        return ["--results", str(tmp / name / "results"), "--cache", str(tmp / name / "cache")]

    quiet = ["--option", "progress=false"]
    smoke = ["run", "--suite", "smoke", *quiet, *folders("smoke")]
    adhoc = ["run", "--dataset", str(tiny_card), "--split", "temporal_loo", "--backbone", "mf", "--method",
             "random", "--set", "backbone.epochs=1", *quiet]
    icl = ["run", "--dataset", "ml-100k", "--split", "ctr_temporal", "--backbone", "none", "--method", "icl",
           *quiet, *folders("icl")]
    icl_tiny = [*icl, "--set", f"method.base_model={lm}", "--set", 'method.answer_tokens=["Yes", "No"]']
    store = tmp / "store"
    cases = [
        # ---- the earlier cases of tests/test_bad_input.py (they behaved well; they must still)
        Case("backbone.learning_rate=abc", [*smoke, "--set", "backbone.learning_rate=abc"]),
        Case("backbone.embedding_size=0", [*smoke, "--set", "backbone.embedding_size=0"]),
        Case("backbone.epochs=-1", [*smoke, "--set", "backbone.epochs=-1"]),
        Case("split.cold_user_threshold=abc", [*smoke, "--set", "split.cold_user_threshold=abc"]),
        Case("method.popular_fraction=2", [*smoke, "--set", "method.popular_fraction=2"]),
        Case("method.user_init=bogus", [*smoke, "--set", "method.user_init=bogus"]),
        Case("encoder.batch_size=abc", [*smoke, "--set", "encoder.batch_size=abc"]),
        Case("--device tpu", [*smoke, "--device", "tpu"]),
        Case("--seeds 0", [*smoke, "--seeds", "0"]),
        Case("--workers 0", [*smoke, "--workers", "0"]),
        Case("--option nope=1", [*smoke, "--option", "nope=1"]),
        Case("method on a backbone it does not run", ["run", "--dataset", "ml-100k", "--split", "temporal_loo",
                                                      "--backbone", "lightgcn", "--method", "seq-text",
                                                      *folders("x")]),
        Case("unknown dataset", ["run", "--dataset", "ml-10k", "--split", "temporal_loo", "--backbone", "mf",
                                 "--method", "random", *folders("x")]),
        Case("unknown builtin suite", ["run", "--suite", "smok", *folders("x")]),
        # ---- item 3: every check before any work, exit 2, one line
        Case("ICL answer_tokens identical", [*icl, "--set", 'method.answer_tokens=[" Yes", " Yes"]']),
        Case("ICL answer token not a single token", [*icl_tiny, "--set", 'method.answer_tokens=["Maybe Yes", "No"]']),
        Case("ICL prompt template without <TargetItemTitle>",
             [*icl_tiny, "--set", "method.prompt=Would the user like it? <HisItemTitleList>"]),
        Case("ICL longest prompt over the context (max_length=8)",
             ["run", "--dataset", str(ctr_card), "--split", "ctr_temporal", "--backbone", "none", "--method", "icl",
              "--set", f"method.base_model={lm}", "--set", 'method.answer_tokens=["Yes", "No"]',
              "--set", "method.max_length=8", *quiet, *folders("ctx")]),
        Case("ICL base_model a folder that is no model", [*icl, "--set", f"method.base_model={not_model}"]),
        Case("suite name '../../escaped'", ["run", "--suite", str(suites / "escape.yaml"), *folders("x")],
             check=lambda r: "nothing outside --results" if not (tmp.parent / "escaped").exists() else
             "WROTE OUTSIDE"),
        Case("encoder.path a folder that is no model", [*smoke, "--set", f"encoder.path={not_model}"]),
        Case("encoder.path missing", [*smoke, "--set", f"encoder.path={tmp / 'nowhere'}"]),
        Case("dangling symlink in the data folder", ["run", "--dataset", str(dangling_card), "--split",
                                                     "temporal_loo", "--backbone", "mf", "--method", "random",
                                                     *folders("x")]),
        Case("--seeds 1000000", [*smoke, "--seeds", "1000000"]),
        Case("--extra-seeds 100000", [*smoke, "--extra-seeds", "100000"]),
        Case("--workers 100000", [*smoke, "--workers", "100000"]),
        Case("--threads 100000", [*smoke, "--threads", "100000"]),
        Case("backbone.embedding_size=1e8", [*smoke, "--set", "backbone.embedding_size=1e8"]),
        Case("backbone.learning_rate=.inf", [*smoke, "--set", "backbone.learning_rate=.inf"]),
        Case("backbone.epochs=true", [*smoke, "--set", "backbone.epochs=true"]),
        Case("--option eval_batch_size=true", [*smoke, "--option", "eval_batch_size=true"]),
        # ---- item 4: folders
        Case("results folder read-only", [*adhoc, "--results", str(tmp / "ro" / "results"), "--cache",
                                          str(tmp / "ro" / "cache")],
             **dict(zip(("wrap", "env"), folder_fault(tmp / "ro" / "results", "ro", mount)))),
        Case("results folder full", [*adhoc, "--results", str(tmp / "full" / "results"), "--cache",
                                     str(tmp / "full" / "cache")],
             **dict(zip(("wrap", "env"), folder_fault(tmp / "full" / "results", "full", mount)))),
        Case("cache folder read-only", [*adhoc, "--results", str(tmp / "roc" / "results"), "--cache",
                                        str(tmp / "roc" / "cache")],
             **dict(zip(("wrap", "env"), folder_fault(tmp / "roc" / "cache", "ro", mount)))),
        # ---- items 6, 10, 11: data and files
        Case("user card with text_fields (runs)", [*adhoc, "--results", str(store / "results"), "--cache",
                                                   str(store / "cache")],
             expect=0, check=lambda r: first_line(r.out.split("\n", 1)[-1]) or "ran"),
        Case("token-only atomic file repeating its header line", ["run", "--dataset", str(header_card), "--split",
                                                                  "temporal_loo", "--backbone", "mf", "--method",
                                                                  "random", *quiet, *folders("hdr")]),
        Case("non-UTF-8 byte in an item file", ["run", "--dataset", str(latin_card), "--split", "temporal_loo",
                                                "--backbone", "mf", "--method", "random", *quiet,
                                                *folders("latin")]),
        Case("non-UTF-8 byte in a dataset card", ["run", "--dataset", str(bad_card), "--split", "temporal_loo",
                                                  "--backbone", "mf", "--method", "random", *folders("x")]),
        Case("non-UTF-8 byte in a suite file", ["run", "--suite", str(suites / "latin1.yaml"), *folders("x")]),
        Case("missing suite file", ["run", "--suite", str(suites / "nope.yaml"), *folders("x")]),
        # ---- item 7: notices on the console (one line each)
        Case("cache rebuilt: notice on the console", [*adhoc, "--seeds", "2", "--results", str(store / "results"),
                                                      "--cache", str(store / "cache")], expect=0,
             before=lambda: _corrupt_dataset_cache(store / "cache")),
        Case("record quarantined: notice on the console", [*adhoc, "--seeds", "2", "--results",
                                                           str(store / "results"), "--cache", str(store / "cache")],
             expect=0,
             before=lambda: _truncate_a_record(store / "results")),
        Case("items without text: notice on the console", ["run", "--dataset", str(missing_card), "--split",
                                                            "temporal_loo", "--backbone", "mf", "--method", "random",
                                                            "--set", "backbone.epochs=1", *quiet,
                                                            *folders("missing")], expect=0),
        # ---- items 8, 11: tables, records, verify
        Case("'|' in a name: Markdown tables", ["run", "--suite", str(suites / "pipe.yaml"), *quiet,
                                                *folders("pipe")], expect=0,
             check=lambda r: _markdown_check(tmp / "pipe" / "results" / "pipe")),
        Case("record file mode", ["run", "--suite", str(suites / "tiny.yaml"), *quiet, *folders("mode")],
             expect=0, check=lambda r: _modes(tmp / "mode" / "results")),
        Case("bench verify removes its scratch folder", ["verify", "--suite", str(suites / "tiny.yaml"), "--all",
                                                         *folders("mode")], expect=0, check=None),
    ]
    # ---- issue 27, item 4: own data (a data folder or file as --dataset, bench data check / add)
    own = write_atomic(data / "own", "own", tiny_rows(), item_rows())
    (own / "own.item").unlink()  # item text is optional
    nodata = tmp / "nodata"
    nodata.mkdir()
    (nodata / "README.md").write_text("notes\n")
    (data / "empty.csv").write_text("")
    (data / "latin.csv").write_bytes("user_id,item_id,title\n1,2,Caf\xe9\n".encode("latin-1"))
    (data / "shop.csv").write_text("customer,sku,stars\n" + "".join(f"c{u},s{i},5\n" for u in range(3) for i in range(3)))
    own_cards = {"BENCH_CARDS": str(tmp / "cards")}
    own_run = ["--split", "temporal_loo", "--backbone", "mf", "--set", "backbone.epochs=1", *quiet]
    cases += [
        Case("own data: --dataset a folder without data files", ["run", "--dataset", str(nodata), "--method", "random",
                                                                 *own_run, *folders("own")]),
        Case("own data: --dataset a path that does not exist", ["run", "--dataset", str(tmp / "nowhere"), "--method",
                                                                "random", *own_run, *folders("own")]),
        Case("own data: a folder without .item (runs, named by it)", ["run", "--dataset", str(own), "--method",
                                                                      "random", *own_run, *folders("own")],
             expect=0, check=lambda r: _dataset_names(tmp / "own" / "results")),
        Case("own data: a method needing item text on data without it", ["run", "--dataset", str(own), "--method",
                                                                          "llminit-var", *own_run, *folders("own2")]),
        Case("--set value that is not valid YAML", ["run", "--dataset", "ml-100k", "--set", "dataset.path=[a",
                                                    "--method", "random", *own_run, *folders("x")]),
        Case("--set dataset.path of ml-100k at other files", ["run", "--dataset", "ml-100k", "--set",
                                                              f"dataset.path={own}", "--method", "random", *own_run,
                                                              *folders("x")]),
        Case("--set dataset.loader of ml-100k", ["run", "--dataset", "ml-100k", "--set", f"dataset.path={own}",
                                                 "--set", "dataset.loader=atomic", "--method", "random", *own_run,
                                                 *folders("x")]),
        Case("own data: CSV without a user column", ["data", "check", str(data / "shop.csv")]),
        Case("own data: empty CSV file", ["data", "check", str(data / "empty.csv")]),
        Case("own data: CSV that is not UTF-8", ["data", "check", str(data / "latin.csv")]),
        Case("own data: data add", ["data", "add", str(own), "--name", "own"], expect=0, env=own_cards,
             check=lambda r: "card written" if (tmp / "cards" / "own.yaml").is_file() else "NO CARD"),
        Case("own data: data add over an existing card", ["data", "add", str(own), "--name", "own"], env=own_cards),
        Case("own data: data add with a builtin name", ["data", "add", str(own), "--name", "ml-100k"], env=own_cards),
    ]
    verify = next(case for case in cases if case.name.startswith("bench verify"))
    before_scratch: list[set] = []
    verify.before = lambda: before_scratch.append(set(Path(tempfile.gettempdir()).glob("bench-verify-*")))
    verify.check = lambda r: ("scratch folder removed" if set(Path(tempfile.gettempdir()).glob("bench-verify-*"))
                              <= before_scratch[0] else "SCRATCH LEFT BEHIND")
    return cases


def concurrent_case(tmp: Path) -> tuple[str, int, str, str]:
    """Two `bench run`s of one suite started together: the embeddings are encoded once, and each run is counted
    done by the process that ran it (the other counts it skipped)."""
    suite = tmp / "suites" / "both.yaml"
    argv = ["run", "--suite", str(suite), "--no-table", "--results", str(tmp / "two" / "results"), "--cache",
            str(tmp / "two" / "cache")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([PYTHON, "-m", "bench", *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    codes = [p.returncode for p in procs]
    done = [re.search(r"done (\d+), skipped (\d+)", out) for out, _ in outs]
    counts = " + ".join(f"done {m.group(1)} skipped {m.group(2)}" if m else "?" for m in done)
    log = tmp / "two" / "results" / "logs" / "prepare.log"
    encodes = len(re.findall(r"Batches:\s+0%", log.read_text(errors="replace"))) if log.exists() else -1
    check = f"{counts}; embeddings encoded {encodes}x (progress bars in prepare.log)"
    err = first_line(outs[0][1]) or first_line(outs[1][1])
    return "two `bench run`s of one suite at once", max(codes), err, check


def _corrupt_dataset_cache(cache: Path) -> None:
    for path in cache.glob("datasets/*/interactions.csv"):
        with open(path, "a") as handle:
            handle.write("9999,1,5.0,1.0\n")


def _truncate_a_record(results: Path) -> None:
    record = sorted(results.glob("runs/*/record.json"))[0]
    record.write_text(record.read_text()[:100])


def _dataset_names(results: Path) -> str:
    import json

    names = sorted({json.loads(p.read_text())["spec"]["dataset"] for p in results.glob("runs/*/record.json")})
    return f"records name the data set: {', '.join(names) or 'no record'}"


def _markdown_check(folder: Path) -> str:
    path = folder / "main.md"
    if not path.exists():
        return f"no {path.name}"
    rows = [line for line in path.read_text().splitlines() if line.startswith("|")]
    cells = {len(re.findall(r"(?<!\\)\|", line)) for line in rows}
    return (f"main.md: {len(rows)} table lines, all with {cells.pop()} cell borders" if len(cells) == 1 else
            f"main.md: BROKEN rows ({sorted(cells)} borders)")


def _modes(results: Path) -> str:
    modes = {oct(p.stat().st_mode & 0o777) for p in results.glob("runs/*/*") if p.is_file()}
    mask = os.umask(0)
    os.umask(mask)
    return f"record files mode {', '.join(sorted(modes))} (umask {oct(mask)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cases-"))
    rows = []
    start = time.perf_counter()
    try:
        for case in build_cases(tmp):
            if callable(case.before):
                case.before()
            result = run_bench(case.argv, case.env, case.wrap)
            err = first_line(result.err)
            check = case.check(result) if callable(case.check) else ""
            if case.expect == 0 and not check:
                notices = [line for line in result.err.splitlines() if line.startswith("bench: ")]
                check = f"{len(notices)} `bench: ...` line(s) on stderr; {first_line(result.out.splitlines()[-1])}"
            verdict = "ok" if result.code == case.expect and (case.expect == 0 or len(
                [line for line in result.err.splitlines() if line.strip()]) >= 1) else "UNEXPECTED"
            rows.append((case.name, result.code, case.expect, err, check, verdict, result.seconds))
            print(f"{case.name}: exit {result.code} ({result.seconds:.1f} s)", file=sys.stderr, flush=True)
        name, code, err, check = concurrent_case(tmp)
        rows.append((name, code, 0, err, check, "ok" if code == 0 else "UNEXPECTED", 0.0))
    finally:
        if args.keep:
            print(f"scratch folder kept: {tmp}", file=sys.stderr)
        else:
            for path in tmp.rglob("*"):
                if path.is_dir() and not os.access(path, os.W_OK):
                    path.chmod(0o755)
            shutil.rmtree(tmp, ignore_errors=True)

    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    print("| # | case | exit | expected | first line of stderr | checked |")
    print("|---|------|------|----------|----------------------|---------|")
    for n, (name, code, expect, err, check, verdict, _) in enumerate(rows, start=1):
        flag = "" if verdict == "ok" else " **(unexpected)**"
        print(f"| {n} | {cell(name)} | {code}{flag} | {expect} | {cell(err)} | {cell(check)} |")
    bad = sum(row[5] != "ok" for row in rows)
    print(f"\n{len(rows)} cases in {time.perf_counter() - start:.0f} s; {bad} unexpected")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""The user documentation: the README opens with what the harness is and its two commands, links only to files in
the repository, and every command-line option has a help text."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_two_commands_are_within_the_first_30_lines():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:30])
    assert "bash scripts/setup.sh && .venv/bin/python -m bench run --suite coldstart" in head
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -q" in head
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("bash scripts/setup.sh && .venv/bin/python -m pytest -q")


def test_links_stay_inside_the_repository():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)", doc.read_text()):
            if re.match(r"[a-z]+://", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT), f"{doc.name}: {target} leaves the repository"
            assert path.exists(), f"{doc.name}: {target} does not exist"
        assert "../shared" not in doc.read_text(), f"{doc.name} points outside the repository"


def test_every_command_line_option_has_help():
    from bench.cli import _parser

    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [f"{name} {' '.join(action.option_strings) or action.dest}"
               for name, sub in commands.choices.items() for action in sub._actions
               if not isinstance(action, argparse._HelpAction) and not action.help]
    assert not missing, missing

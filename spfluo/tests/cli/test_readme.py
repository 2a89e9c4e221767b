"""README.md as a newcomer follows it: the two commands at the top, CI running exactly the
test command, and every `spfluo` command of the page accepted by the real parser."""

import shlex
from pathlib import Path

import pytest

from spfluo.cli import build_parser

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"


def _code_lines() -> list[str]:
    """The command lines of the README's code blocks (continuations joined, comments cut)."""
    lines, block, fence = [], None, None
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if block is None:
                block, fence = [], line[3:].strip()
            else:
                if fence == "":  # shell blocks; ```python blocks are not commands
                    text = "\n".join(block).replace("\\\n", " ")
                    lines += [c.split("  #")[0].strip() for c in text.splitlines() if c.strip()]
                block = None
        elif block is not None:
            block.append(line)
    return lines


def test_the_two_commands_at_the_top():
    demo, tests = _code_lines()[:2]
    assert demo == "python3.11 -m venv .venv && . .venv/bin/activate && pip install -e . && " \
                   "spfluo demo"
    # the tests install in their own environment, not in the demo's
    assert tests == 'python3.11 -m venv .venv-test && . .venv-test/bin/activate && pip ' \
                    'install -e ".[test]" && python -m pytest'


def test_ci_runs_exactly_the_readme_test_command():
    tests = _code_lines()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == tests
    assert "xvfb" in " ".join(ci) and "chromium" in " ".join(ci)


def test_every_spfluo_command_of_the_readme_parses():
    parser = build_parser()
    commands = [line for line in _code_lines() if line.startswith("spfluo ")]
    assert len(commands) > 20
    for line in commands:
        argv = shlex.split(line)[1:]
        try:
            args = parser.parse_args(argv)
        except SystemExit:  # argparse's error: the README shows a command that does not exist
            pytest.fail(f"README command does not parse: {line}")
        assert callable(args.func), line


def test_the_readme_leads_to_the_gui_without_scipion3():
    text = README.read_text(encoding="utf-8")
    assert "spfluo gui spfluo-demo-1" in text and "Analyze results" in text
    assert "scipion3 project" not in text
    assert "spfluo-demo-figures" not in text  # the demo writes inside its project

"""The documentation cannot drift from the code: every `vaetrain ...` command line in the README and the
docs parses with the command's own parser (an unknown key, a removed option or a missing preset fails)."""

import argparse
import functools
import pkgutil
import re
import shlex
from pathlib import Path

import pytest

from tests.test_cli import ParseOnly
from vaetrain.cli.fit import OneLineErrors, distill_arguments
from vaetrain.data import SampleDataModule
from vaetrain.training.module import AutoencoderModule

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def command_lines(path: Path) -> list[str]:
    """Lines of fenced code blocks that run `vaetrain` (backslash continuations joined, comments dropped)."""
    lines, inside = [], False
    for line in re.sub(r"\\\n\s*", " ", path.read_text()).splitlines():
        if line.strip().startswith("```"):
            inside = not inside
            continue
        words = shlex.split(line, comments=True) if inside else []
        if words and words[0] in ("vaetrain", ".venv/bin/vaetrain"):
            lines.append(shlex.join(words[1:]))
    return lines


COMMANDS = [pytest.param(line, id=f"{path.name}:{line[:60]}") for path in PAGES for line in command_lines(path)]


@functools.cache
def fit_parser():
    """`vaetrain fit`'s own parser, built once."""
    cli = ParseOnly(AutoencoderModule, SampleDataModule, args=["fit"], auto_configure_optimizers=False, parser_class=OneLineErrors)
    return cli.parser


class _Parsed(Exception):
    pass


def parses(line: str, monkeypatch) -> None:
    """Parses `vaetrain LINE` as the command would, running nothing."""
    from vaetrain.cli import COMMANDS as NAMES
    from vaetrain.cli import commands

    command, *args = shlex.split(line)
    assert command in NAMES, f"unknown command {command}"
    if command == "distill":
        command, *args = distill_arguments(args)
    if command in ("fit", "validate"):
        fit_parser().parse_args([command, *args])  # exits 2 naming a bad key
        return
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, argv=None, namespace=None):
        original(self, argv, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(_Parsed):
        getattr(commands, f"run_{command}")(args)


def test_the_docs_show_commands_of_every_kind():
    assert len(COMMANDS) >= 30
    assert {shlex.split(p.values[0])[0] for p in COMMANDS} >= {"fit", "distill", "eval", "probe", "recon", "export", "convert"}


@pytest.mark.parametrize("line", COMMANDS)
def test_every_documented_command_parses(line, monkeypatch):
    monkeypatch.chdir(ROOT)  # presets are named relative to the checkout
    parses(line, monkeypatch)


API_ENTRIES = [entry for path in PAGES for entry in re.findall(r"^::: ([\w.]+)", path.read_text(), flags=re.M)]


@pytest.mark.parametrize("entry", API_ENTRIES)
def test_every_api_page_entry_names_an_object(entry):
    """The `::: module.name` entries mkdocstrings renders name what the code holds now (a moved module fails)."""
    assert pkgutil.resolve_name(entry) is not None


def test_the_architecture_page_names_every_module_and_none_that_is_gone():
    """docs/architecture.md lists every module of the package, every fixture and every benchmark script, and nothing else."""
    root = Path(__file__).parents[1]
    source = root / "src" / "vaetrain"
    paths = re.findall(r"`((?:benchmarks/)?[\w/]+\.py)`", (root / "docs" / "architecture.md").read_text())
    named = {path for path in paths if not path.startswith("tests/")}
    modules = {p.relative_to(source).as_posix() for p in source.rglob("*.py")}
    modules |= {f"{folder}/{p.name}" for folder in ("benchmarks", "fixtures") for p in (root / folder).glob("*.py") if p.name != "__init__.py"}
    assert not modules - named, f"missing from docs/architecture.md: {sorted(modules - named)}"
    assert not named - modules, f"named in docs/architecture.md but gone: {sorted(named - modules)}"

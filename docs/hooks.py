"""MkDocs hook: `<!-- help: COMMAND -->` in a page becomes that command's `--help`, taken from the command
line itself when the site is built, so the reference cannot drift from the code."""

from __future__ import annotations

import contextlib
import io
import re
import sys


def _help(command: str) -> str:
    from vaetrain.cli import main

    output, argv = io.StringIO(), sys.argv
    sys.argv = ["vaetrain"]  # LightningCLI reads it too; mkdocs' own arguments are not the command's
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
            main(["--help"] if command == "vaetrain" else [command, "--help"])
    finally:
        sys.argv = argv
    return output.getvalue().rstrip()


def on_page_markdown(markdown: str, **kwargs) -> str:
    return re.sub(r"<!-- help: (\w+) -->", lambda match: f"```text\n{_help(match.group(1))}\n```", markdown)

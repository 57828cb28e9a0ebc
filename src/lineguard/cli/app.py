"""The ``lineguard`` application object, its consoles and its one rule for errors; commands register on ``app``.

A user mistake (:class:`~lineguard.errors.LineguardError`: a bad file, folder, option or parameter) ends a
command with a single red line naming it and exit status 2. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from lineguard.errors import LineguardError

console = Console(stderr=True)  # progress, warnings, errors
out = Console()  # results


class Commands(TyperGroup):
    """The commands, with the error rule of the module docstring."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LineguardError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(cls=Commands, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Industrial visual anomaly detection: find defective parts and where the defect is.")


def warn(message: str) -> None:
    console.print(f"[yellow]{escape(message)}[/yellow]", soft_wrap=True)


def report_failures(failed: list[tuple[Path, str]]) -> None:
    """Name the files that could not be read, at the end of a command."""
    if failed:
        console.print(f"[yellow]{len(failed)} file(s) could not be read and were skipped:[/yellow]")
        for path, reason in failed:
            console.print(escape(f"  {path}: {reason}"), soft_wrap=True)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (an image read only in part, ...) as one yellow line, without source locations."""
    console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", soft_wrap=True)


def main() -> None:
    """Console entry point (errors: see :class:`Commands`). File names that are not valid UTF-8 are printed
    escaped, and warnings as one line."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    warnings.showwarning = _one_line_warning
    app()

"""The ``lineguard`` command: argument parsing only, one module per command group, each registering its
commands on :data:`~lineguard.cli.app.app`. A new command is one more module here and one import below.

The work is done by the library (``lineguard.inspect``, ``lineguard.evaluation``, the methods); a user mistake
is a :class:`~lineguard.errors.LineguardError` and ends a command with one red line (:mod:`lineguard.cli.app`).
"""

from lineguard.cli import (encoder, evaluate, export, info, models, predict, prompts, results, serve,  # noqa: F401
                           update, watch)
from lineguard.cli.app import app, main
from lineguard.cli.evaluate import run_subprocess
from lineguard.cli.options import parse_param
from lineguard.inspect import MIN_BATCH_FOR_DECISIONS

__all__ = ["MIN_BATCH_FOR_DECISIONS", "app", "main", "parse_param", "run_subprocess"]

"""The errors a user causes and can fix: a bad file, folder, parameter or option.

Each says in one line what is wrong and names the file or value. The command line prints exactly these as one
line and exits non-zero; any other exception is a bug in lineguard and keeps its traceback. Subclasses also
derive from the built-in error they refine (``ValueError``, ``FileNotFoundError``, ...), so callers catching
those keep working.
"""

from __future__ import annotations


class LineguardError(Exception):
    """Base of every user-facing lineguard error."""


class ParameterError(LineguardError, ValueError):
    """A parameter or option value of the wrong type or outside its range; the message names it."""

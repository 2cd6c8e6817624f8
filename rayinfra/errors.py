"""The one base of every error rayinfra raises on purpose, and the exit codes the CLI gives them.

An error a user can act on derives from `RayinfraError`; its message says what is wrong
and what to do. The CLI prints the message (no traceback) and exits with the class's
``exit_code``:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     done
1     a check ran and found problems (``rayinfra audit verify``)
2     the input cannot be used as given: spec, contract, data, key file, model
      reference, registry state, a job that cannot fit; nothing was changed
3     a job followed by ``rayinfra submit`` or ``jobs logs --follow`` was stopped
      (a failed job gives 1)
4     the cluster or a service is unreachable or refused our credentials (Jobs
      API, token); retry once it is reachable
====  ==========================================================================

Anything else is a bug in rayinfra and keeps its traceback.
Each concrete error also keeps a built-in base (``ValueError`` or ``RuntimeError``), so
code that caught those before still does.
"""

from __future__ import annotations

EXIT_PROBLEMS_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_JOB_STOPPED = 3
EXIT_UNREACHABLE = 4


class RayinfraError(Exception):
    """An error with a message meant for the user; the CLI exits with ``exit_code``."""

    exit_code: int = EXIT_BAD_INPUT


class UnreachableError(RayinfraError):
    """The cluster or a service could not be reached, or refused our credentials."""

    exit_code = EXIT_UNREACHABLE

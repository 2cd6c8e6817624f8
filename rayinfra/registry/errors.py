"""The one error type of the registry package, shared by its modules."""

from __future__ import annotations


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (no champion, unknown version, tampered bundle...)."""

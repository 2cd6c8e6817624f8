"""The one error type of the registry package, shared by its modules."""

from __future__ import annotations

from rayinfra.errors import RayinfraError


class RegistryError(RayinfraError, RuntimeError):
    """A registry operation that cannot be done (no champion, unknown version, tampered bundle...)."""


class RegistryUnavailable(RegistryError):
    """The registry (MLflow) cannot be reached; what was verified before may still be served."""

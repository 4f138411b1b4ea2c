"""CRD defaulting for objects read from files; see controller.schema."""

from controller.schema import apply_defaults

__all__ = ["apply_defaults"]

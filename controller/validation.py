"""API-server validation for objects read from files; see controller.schema."""

from controller.schema import FieldError, validate

__all__ = ["FieldError", "validate"]

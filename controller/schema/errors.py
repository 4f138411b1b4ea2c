"""The one record validation produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason the API server would reject an object.

    ``path`` names the field the way kubectl prints it ("spec.rules[0].matches[0].path");
    a rule about one field names that field, a rule relating several fields names the
    object that holds them.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

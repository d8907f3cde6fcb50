"""The one place the compiler's passes raise located errors and collect warnings."""

from __future__ import annotations

from flowdsl.errors import CheckError, CheckWarning, Span

__all__ = ["Diagnostics"]


class Diagnostics:
    """Raises located errors for one spec text (the one place errors get their source line)."""

    def __init__(self, filename: str, source: str) -> None:
        self.filename = filename
        self.source = source
        self.warnings: list[CheckWarning] = []

    def fail(self, message: str, span: Span | None, cls: type[CheckError] = CheckError, notes=()) -> None:
        raise cls(message, filename=self.filename, span=span, source=self.source, notes=notes)

    def warn(self, message: str, span: Span | None) -> None:
        self.warnings.append(CheckWarning(message, filename=self.filename, span=span, source=self.source))

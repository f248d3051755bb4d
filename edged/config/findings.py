"""What `edged check-config` found: errors fail it, warnings and notes do not."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a check found, each a complete line; `errors` fail it, `warnings` do not."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    delegate_loads: bool = True  # False: the delegate library cannot load (a CPU fallback)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class Report:
    """Collects findings while the checks run."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    delegate_loads: bool = True

    def result(self) -> CheckResult:
        # Once each: what several cameras share is said once, on its own line.
        return CheckResult(_once(self.errors), _once(self.warnings), _once(self.notes),
                           self.delegate_loads)


def _once(lines: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(lines))

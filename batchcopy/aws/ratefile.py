"""Quota overrides as users write them: `--rate OPERATION=RATE[/BURST]` and `--rate-file`
(a JSON object of operation -> rate, or -> {"rate": R, "burst": B}), each mistake one line
naming the operation or the file."""

from __future__ import annotations

import json
import math
from pathlib import Path

from batchcopy.aws.ratelimit import DEFAULT_QUOTAS


def _known_operation(name: str) -> str:
    if name not in DEFAULT_QUOTAS:
        known = ", ".join(sorted(DEFAULT_QUOTAS))
        raise ValueError(f"unknown operation {name!r}; known operations: {known}")
    return name


def _positive(value: object, what: str, minimum: float, strict: bool) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or (
        number <= minimum if strict else number < minimum
    ):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{what} must be a finite number {bound}, got {value!r}")
    return number


def parse_rate(text: str) -> tuple[str, float, float | None]:
    """Parse "CopyImageSet=5" or "CopyImageSet=5/10" into (operation, rate, burst)."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise ValueError(f"expected OPERATION=RATE or OPERATION=RATE/BURST, got {text!r}")
    _known_operation(name)
    rate_text, slash, burst_text = value.partition("/")
    rate = _positive(rate_text.strip(), f"rate of {name}", 0.0, strict=True)
    if not slash:
        return name, rate, None
    burst = _positive(burst_text.strip(), f"burst of {name}", 1.0, strict=False)
    return name, rate, burst


def load_rate_file(path: Path) -> dict[str, tuple[float, float | None]]:
    """Read {"CopyImageSet": 5} or {"CopyImageSet": {"rate": 5, "burst": 10}} from JSON."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of operation -> rate")
    result: dict[str, tuple[float, float | None]] = {}
    for name, spec in data.items():
        try:
            _known_operation(name)
            if isinstance(spec, dict):
                extra = set(spec) - {"rate", "burst"}
                if extra or "rate" not in spec:
                    raise ValueError(
                        f"{name}: expected {{\"rate\": R, \"burst\": B}} (burst optional), "
                        f"got keys {sorted(spec)}")
                rate = _positive(spec["rate"], f"rate of {name}", 0.0, strict=True)
                burst_value = spec.get("burst")
                burst = (None if burst_value is None
                         else _positive(burst_value, f"burst of {name}", 1.0, strict=False))
            else:
                rate = _positive(spec, f"rate of {name}", 0.0, strict=True)
                burst = None
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        result[name] = (rate, burst)
    return result

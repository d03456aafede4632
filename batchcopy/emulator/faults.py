"""Injected faults: what a flaky network or a struggling service does to a client.

Rules are `FaultSpec`s (see config.py) read from the live `EmulatorConfig.faults`;
they are evaluated in order for every request that matched an operation (control
routes never are), after authentication and quotas:

* a rule matches when its `operation` is the request's operation or "*";
* a matching rule first lets `after` matching requests pass, then fires with
  `probability` (a `random.Random(config.fault_seed)`, drawn only when
  probability < 1, so the sequence is reproducible), at most `count` times;
* `latency` rules add up (`latency_s`, scaled by time_scale) and evaluation goes on;
* the first other rule that fires decides the request and ends evaluation:
  throttle / internal / unavailable are answered as JSON errors without executing,
  html503 as a load balancer's HTML 503 page without executing (`HTML_503`), reset
  drops the connection without executing, lost_response executes the operation and
  then drops the connection before the answer is written (a refusal of the operation
  is dropped too: the client cannot tell either from a timeout).

The rule state (seen/fired counters, RNG) starts afresh whenever the rule list or
the seed changes. Fired faults are counted per kind and per operation, and the
latency added (scaled seconds, which the server sleeps before answering) per operation:
tests read what was applied instead of timing requests.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass

from batchcopy.emulator.config import EmulatorConfig, FaultSpec
from batchcopy.emulator.errors import (
    InternalServerException,
    ServiceError,
    ServiceUnavailableException,
    ThrottlingException,
)

ERROR_FAULTS: dict[str, tuple[type[ServiceError], str]] = {
    "throttle": (ThrottlingException, "Rate exceeded"),
    "internal": (InternalServerException, "Internal server error (injected fault)"),
    "unavailable": (ServiceUnavailableException, "Service unavailable (injected fault)"),
}
CONNECTION_FAULTS = frozenset({"reset", "lost_response"})
# What an AWS load balancer answers with no healthy target behind it (no JSON, no
# x-amzn-ErrorType): botocore reads it as code "503" with the status's reason.
HTML_503 = (b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n"
            b"<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
            b"</body>\r\n</html>\r\n")


@dataclass(frozen=True)
class FaultDecision:
    """What to do with one request: sleep `latency_s` first, then `kind` (None = normal)."""

    kind: str | None = None
    latency_s: float = 0.0

    def error(self) -> ServiceError | None:
        """The error to answer for throttle/internal/unavailable, else None."""
        if self.kind in ERROR_FAULTS:
            cls, message = ERROR_FAULTS[self.kind]
            return cls(message)
        return None


@dataclass
class _RuleState:
    spec: FaultSpec
    seen: int = 0
    fired: int = 0


class FaultInjector:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._key: tuple[object, ...] | None = None
        self._rules: list[_RuleState] = []
        self._rng = random.Random(0)
        self.fired: Counter[str] = Counter()
        self.fired_by_operation: dict[str, Counter[str]] = {}
        self.latency_s_by_operation: Counter[str] = Counter()
        self.refusals_lost: Counter[str] = Counter()  # lost_response that dropped a refusal

    def refusal_lost(self, operation: str) -> None:
        with self._lock:
            self.refusals_lost[operation] += 1

    def _sync(self) -> None:
        key = (self.config.fault_seed, tuple(tuple(sorted(asdict(f).items())) for f in self.config.faults))
        if key != self._key:
            self._key = key
            self._rules = [_RuleState(f) for f in self.config.faults]
            self._rng = random.Random(self.config.fault_seed)

    def decide(self, operation: str) -> FaultDecision:
        with self._lock:
            self._sync()
            latency = 0.0
            for rule in self._rules:
                spec = rule.spec
                if spec.operation not in ("*", operation):
                    continue
                rule.seen += 1
                if rule.seen <= spec.after:
                    continue
                if spec.count is not None and rule.fired >= spec.count:
                    continue
                if spec.probability < 1.0 and self._rng.random() >= spec.probability:
                    continue
                rule.fired += 1
                self.fired[spec.kind] += 1
                self.fired_by_operation.setdefault(operation, Counter())[spec.kind] += 1
                if spec.kind == "latency":
                    latency += self.config.scaled(spec.latency_s)
                    continue
                return self._decided(operation, FaultDecision(spec.kind, latency))
            return self._decided(operation, FaultDecision(None, latency))

    def _decided(self, operation: str, decision: FaultDecision) -> FaultDecision:
        if decision.latency_s > 0:  # the server sleeps every latency it is given
            self.latency_s_by_operation[operation] += decision.latency_s
        return decision

    def restart(self, counters: bool = True) -> None:
        """Start the rules afresh (seen/fired, RNG); with `counters`, zero the fired counts."""
        with self._lock:
            self._key = None
            if counters:
                self.fired.clear()
                self.fired_by_operation.clear()
                self.latency_s_by_operation.clear()
                self.refusals_lost.clear()

    def counts(self) -> dict[str, object]:
        with self._lock:
            return {
                "faults_fired": dict(self.fired),
                "faults_fired_by_operation": {op: dict(c) for op, c in self.fired_by_operation.items()},
                "latency_added_s_by_operation": dict(self.latency_s_by_operation),
                "refusals_lost_by_operation": dict(self.refusals_lost),
            }

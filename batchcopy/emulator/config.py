"""Emulator configuration: every number the service fixes, overridable.

Defaults are AWS's published defaults (see ../shared/reference/healthimaging-notes.md).
`time_scale` multiplies every duration the emulator models and divides every
rate: 1.0 is real time; 0.01 runs the same logic 100x faster (CopyImageSet's
0.25/s becomes 25/s, a 2 s copy takes 20 ms).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from batchcopy.emulator import assumptions


@dataclass(frozen=True)
class RateQuota:
    rate: float  # requests per second (before time_scale)
    burst: float  # bucket size


# Published default request quotas per account and region (rate, burst).
DEFAULT_RATES: dict[str, RateQuota] = {
    "CopyImageSet": RateQuota(0.25, 1),
    "UpdateImageSetMetadata": RateQuota(0.25, 1),
    "DeleteImageSet": RateQuota(0.25, 1),
    "GetImageSet": RateQuota(25, 50),
    "SearchImageSets": RateQuota(25, 50),
    "ListImageSetVersions": RateQuota(25, 50),
    "GetDICOMImportJob": RateQuota(25, 50),
    "GetImageSetMetadata": RateQuota(50, 100),
    "GetImageFrame": RateQuota(1000, 2000),
    "GetDatastore": RateQuota(10, 20),
    "ListDatastores": RateQuota(5, 10),
    "CreateDatastore": RateQuota(0.085, 1),
    "DeleteDatastore": RateQuota(0.085, 1),
}


FAULT_KINDS = ("throttle", "internal", "unavailable", "reset", "latency", "lost_response",
               "html503")


@dataclass
class FaultSpec:
    """One injected fault rule.

    kind:
      throttle       answer 429 ThrottlingException (nothing executed)
      internal       answer 500 InternalServerException (nothing executed)
      unavailable    answer 503 ServiceUnavailableException (nothing executed)
      html503        answer what a load balancer in front of the service answers when it has
                     no healthy target: an HTML 503 page, text/html, no x-amzn-ErrorType
                     (nothing executed)
      reset          drop the connection before executing (nothing executed)
      latency        sleep `latency_s` (scaled by time_scale) before executing
      lost_response  execute the operation, then drop the connection before answering,
                     whatever the answer: a refusal (a 4xx: a conflict, a validation
                     error, a quota) is lost like a success
    operation: an operation name or "*" for all (control routes are never faulted).
    probability: chance per matching request (a deterministic RNG seeded by `seed`).
    count: fire at most this many times (None = unlimited).
    after: let this many matching requests pass before the rule can fire.
    """

    kind: str
    operation: str = "*"
    probability: float = 1.0
    count: int | None = None
    after: int = 0
    latency_s: float = 0.0


@dataclass
class AuthConfig:
    """Optional SigV4 verification (off when `EmulatorConfig.auth` is None).

    keys: access key id -> secret access key (unknown key -> UnrecognizedClientException).
    expired_tokens: session tokens answered with ExpiredTokenException.
    deny: access key id (or "*") -> operation names answered AccessDeniedException.
    """

    keys: dict[str, str] = field(default_factory=dict)
    expired_tokens: list[str] = field(default_factory=list)
    deny: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class EmulatorConfig:
    region: str = "us-east-1"
    account_id: str = "123456789012"
    time_scale: float = 1.0
    enforce_rates: bool = True
    # request quotas count a request when its first bytes reached the machine (the kernel's
    # stamp, arrivals.py), not when the handler runs (False: the handler's clock)
    kernel_arrivals: bool = True
    rates: dict[str, RateQuota] = field(default_factory=dict)  # overrides of DEFAULT_RATES
    max_concurrent_copies_per_datastore: int = 100
    max_frames_per_copy: int = 1000
    max_copiable_attributes_chars: int = 260_000
    copy_base_s: float = 2.0  # modelled copy duration = base + frames * per_frame
    copy_per_frame_s: float = 0.02
    study_consistency_s: float = 1.0  # UPDATING_FOR_STUDY_CONSISTENCY after a copy (assume it "on")
    update_s: float = 1.0  # modelled UpdateImageSetMetadata duration (LOCKED / UPDATING)
    max_concurrent_updates_per_datastore: int = 100
    delete_s: float = 1.0  # modelled DeleteImageSet duration (LOCKED / DELETING meanwhile)
    max_concurrent_deletes_per_datastore: int = 100
    faults: list[FaultSpec] = field(default_factory=list)
    fault_seed: int = 0
    auth: AuthConfig | None = None
    # Readings of the behaviours the documentation leaves open (assumptions.py): NAME -> VALUE.
    assume: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.assume = assumptions.validate(self.assume)

    def reading(self, name: str) -> str:
        """The chosen reading of an assumption switch (its default when not chosen)."""
        return self.assume.get(name) or assumptions.REGISTRY[name].default

    def rate_for(self, operation: str) -> RateQuota | None:
        """The effective (time-scaled) quota of an operation, None if unlimited."""
        q = self.rates.get(operation) or DEFAULT_RATES.get(operation)
        if q is None:
            return None
        return RateQuota(q.rate / self.time_scale, q.burst)

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmulatorConfig":
        data = dict(data)
        rates = {k: v if isinstance(v, RateQuota)
                 else RateQuota(**v) if isinstance(v, dict) else RateQuota(*v)
                 for k, v in (data.pop("rates", None) or {}).items()}
        faults = [f if isinstance(f, FaultSpec) else FaultSpec(**f)
                  for f in (data.pop("faults", None) or [])]
        for f in faults:
            if f.kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {f.kind!r}; expected one of {FAULT_KINDS}")
        auth = data.pop("auth", None)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown emulator config keys: {sorted(unknown)}")
        if isinstance(auth, dict):
            auth = AuthConfig(**auth)
        return cls(rates=rates, faults=faults, auth=auth or None, **data)

    @classmethod
    def from_json_file(cls, path: str) -> "EmulatorConfig":
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

"""The emulator's settings: what Kapso lets a project configure, plus the knobs tests need."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PHONE_NUMBER_ID = "1029384756"
DEFAULT_WABA_ID = "102290129340398"
DEFAULT_PORT = 8091
# A development default, not a secret: real deployments never talk to the emulator.
DEFAULT_WEBHOOK_SECRET = "kapso-emulator-secret"  # noqa: S105
# Webhook requests on the wire at once (and connections to the service). Fixed at start-up: the
# HTTP client's pool is sized to it. Enough to keep a local service busy; deliveries beyond it
# wait their turn in order.
DEFAULT_WEBHOOK_CONCURRENCY = 32


class PayloadVersion(StrEnum):
    V1 = "v1"
    V2 = "v2"


class TemplateApproval(StrEnum):
    AUTO = "auto"
    PENDING = "pending"


class WindowMode(StrEnum):
    # "reject": the send call itself fails with 131047 (what the issue asks for).
    # "fail_status": the send is accepted and a failed status event carries 131047 (what Meta
    # often does in practice); both exist so the service can be tested against either.
    REJECT = "reject"
    FAIL_STATUS = "fail_status"
    OFF = "off"


class PhoneNumberConfig(BaseModel):
    """A business number ("WhatsApp config") the project owns."""

    model_config = ConfigDict(extra="forbid")

    phone_number_id: str = DEFAULT_PHONE_NUMBER_ID
    business_account_id: str = DEFAULT_WABA_ID
    display_phone_number: str = "+56 2 2345 6789"
    verified_name: str = "Fizko"
    quality_rating: str = "GREEN"
    status: str = "CONNECTED"
    throughput_tier: str = "TIER_80"
    whatsapp_config_id: str = "7c2b9e10-5d4a-4f3e-8b21-0e9d8c7b6a54"


class StatusDelays(BaseModel):
    """Seconds (before time scaling) from an accepted send to each status event."""

    model_config = ConfigDict(extra="forbid")

    sent: float = Field(default=0.0, ge=0)
    delivered: float = Field(default=1.0, ge=0)
    read: float | None = Field(default=3.0, ge=0, description="None: the user never reads.")


class EmulatorConfig(BaseModel):
    """Everything the control API can change at run time."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    webhook_url: str | None = None
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    payload_version: PayloadVersion = PayloadVersion.V2
    webhook_headers: dict[str, str] = Field(default_factory=dict)
    # Real waits are nominal seconds multiplied by this: 0.01 turns Kapso's 10 s into 0.1 s.
    time_scale: float = Field(default=1.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    retry_schedule_seconds: list[float] = Field(default_factory=lambda: [10.0, 40.0, 90.0])
    batching: bool = False
    batch_window_seconds: float = Field(default=5.0, ge=1, le=60)
    batch_max_size: int = Field(default=50, ge=1, le=100)
    status_delays: StatusDelays = Field(default_factory=StatusDelays)
    # Recipients (digits) whose messages end in a failed status with 131026 (undeliverable).
    undeliverable_numbers: list[str] = Field(default_factory=list)
    template_approval: TemplateApproval = TemplateApproval.AUTO
    # None: any non-empty key is accepted; otherwise only this one.
    api_key: str | None = None
    rate_limit_per_minute: int = Field(default=1000, ge=1)
    window_mode: WindowMode = WindowMode.REJECT
    # Base URL the emulator is reachable at, used in download URLs; None: taken from the request.
    public_url: str | None = None
    phone_numbers: list[PhoneNumberConfig] = Field(default_factory=lambda: [PhoneNumberConfig()])

    def scaled(self, seconds: float) -> float:
        """Real seconds to wait for `seconds` of Kapso time."""
        return seconds * self.time_scale


class ConfigPatch(BaseModel):
    """A partial update of `EmulatorConfig` (only the fields present are applied)."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = None
    webhook_secret: str | None = None
    payload_version: PayloadVersion | None = None
    webhook_headers: dict[str, str] | None = None
    time_scale: float | None = Field(default=None, gt=0)
    webhook_timeout_seconds: float | None = Field(default=None, gt=0)
    retry_schedule_seconds: list[float] | None = None
    batching: bool | None = None
    batch_window_seconds: float | None = Field(default=None, ge=1, le=60)
    batch_max_size: int | None = Field(default=None, ge=1, le=100)
    status_delays: StatusDelays | None = None
    undeliverable_numbers: list[str] | None = None
    template_approval: TemplateApproval | None = None
    api_key: str | None = None
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    window_mode: WindowMode | None = None
    public_url: str | None = None
    phone_numbers: list[PhoneNumberConfig] | None = None

"""The schedules that ``metalr`` is compared against, all built from torch's or transformers' own
schedulers, or the published LR-free optimizers."""

from .schedules import (
    LR_FREE,
    SCHEDULES,
    MissingPeerError,
    attach_baseline,
    attach_schedule,
    available_schedules,
    check_schedule,
    require_schedule,
    schedule_training_overrides,
)

__all__ = ["LR_FREE", "SCHEDULES", "MissingPeerError", "attach_baseline", "attach_schedule", "available_schedules", "check_schedule",
           "require_schedule", "schedule_training_overrides"]

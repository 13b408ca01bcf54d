"""The schedules that ``metalr`` is compared against, all built from torch's or transformers' own schedulers."""

from .schedules import SCHEDULES, attach_schedule, check_schedule, schedule_training_overrides

__all__ = ["SCHEDULES", "attach_schedule", "check_schedule", "schedule_training_overrides"]

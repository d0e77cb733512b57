"""One router per resource: predict, models, health (liveness, readiness, metrics)."""

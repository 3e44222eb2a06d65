"""ccbridge: Claude Code telemetry to audit records."""

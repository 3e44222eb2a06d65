"""ccbridge: Claude Code telemetry to audit records."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ccbridge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

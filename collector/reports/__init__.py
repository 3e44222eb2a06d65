"""Reports for engineering leaders: usage, adoption tiers, anomalies and telemetry completeness (``ccbridge report``).

``config`` is imported by :mod:`collector.config` and must stay free of heavy imports.
"""

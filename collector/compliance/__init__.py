"""Compliance reporting: the approval trail export (from the local store or from Splunk)."""

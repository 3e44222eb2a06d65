"""The reviewers' web console: the approval trail, sessions, users, integrity and exports, over the local store.

Every page view and export by a reviewer is itself stored as a ``trail_access`` audit record (see
:mod:`collector.console.trail`) and delivered to the destinations like any other record.
"""

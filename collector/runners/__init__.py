"""Runners execute an episode plan: ``local`` (in-process) now, ``ray`` with issue #4."""

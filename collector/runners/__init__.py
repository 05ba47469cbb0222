"""Runners execute an episode plan: ``local`` (in-process) or ``ray`` (parallel actors)."""

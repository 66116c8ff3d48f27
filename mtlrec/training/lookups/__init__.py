"""Changing a trained run's lookups (detecting the change, restoring into the new tables)
and refusing a changed numeric encoding."""

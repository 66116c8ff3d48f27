"""Changing a trained run's lookups (detecting the change and restoring into the new tables)
or its history encoders (refused)."""

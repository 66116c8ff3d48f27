"""Changes to a trained run's tables and encoders: lookups (detected, and restored into the
new tables with --migrate-lookups), numeric encodings and history encoders (refused)."""

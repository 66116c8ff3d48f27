"""The run directory and what it records: lock, state.json, checkpoints, metrics.csv, logs, atomic writes."""

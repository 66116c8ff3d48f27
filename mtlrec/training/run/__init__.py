"""The run directory and what it records: its lock, state.json, checkpoints, metrics.csv and logs."""

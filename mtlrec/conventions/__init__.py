"""The conventions every package follows, each written once: argument checks, errors that name
their config key, YAML reading, config specs, weight seeds, atomic file writes."""

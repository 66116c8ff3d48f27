"""The project-wide conventions every package follows, each in one place: argument checks, errors that name their config key, YAML reading, config specs, weight seeds."""

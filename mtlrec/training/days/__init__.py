"""The days of a command: which are trained, where a day resumes, their checks and datasets."""

"""What every model is built on: the MultiTaskModel base class (schema inputs, shared embedding, interaction block, task heads), its variable groups and the funnel helpers."""

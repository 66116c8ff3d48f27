"""Layers that read a behavior sequence: DUPN's property-gated LSTM and attention pooling."""

"""Layers that read a behavior sequence: the history encoders (DIN's target attention, BST's
self-attention, DUPN's property-gated LSTM with attention pooling) and their parts."""

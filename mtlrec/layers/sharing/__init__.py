"""Layers that pass information between task columns: cross-stitch units and AITM's transfer."""

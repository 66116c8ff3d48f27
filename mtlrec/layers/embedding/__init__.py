"""Schema-driven embedding of the inputs: id lookups (hash, identity, dynamic), numerics and sequences; TensorFlow only."""

"""mtlrec.optimizers."""

"""mtlrec.training."""

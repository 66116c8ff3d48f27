"""mtlrec.layers."""

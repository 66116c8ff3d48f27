"""mtlrec.models."""

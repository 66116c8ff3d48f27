"""mtlrec.data_pipeline."""

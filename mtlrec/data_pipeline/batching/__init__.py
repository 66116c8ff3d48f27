"""Batch-shaped numpy arrays from Arrow columns: the vectorised conversion
(`batch_arrays`) and the shuffle buffer of numpy rows (`row_shuffler`) that the Parquet
reader builds its batches with."""

"""Data: sources and the raw file format, decoding and splitting, in-memory batches."""

"""Data readers, graph building and data sets: not implemented yet."""

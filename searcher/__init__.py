"""The searcher: finds the indexed sounds most similar to a file, a vector or an indexed point."""

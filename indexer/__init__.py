"""The indexer: walks audio folders and keeps a Qdrant collection of clip vectors in step with them."""

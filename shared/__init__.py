"""audiosim's own code shared by the indexer and the searcher: file → clip → mel image → embedding → Qdrant."""

"""What a run hands to serving: SavedModel exports and batch scoring with them."""

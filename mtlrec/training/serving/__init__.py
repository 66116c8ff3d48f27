"""What a run hands to serving: SavedModel exports, batch scoring, and a REST server over them."""

"""Feature interactions over field embeddings: FM, dot products, DCN-v2's cross network."""

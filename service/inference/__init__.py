"""Running the models: the per-model batcher, the registry that swaps packages without losing
a request, and the request's way from bytes to a batch row (decode in the pool, then the
model's queue). Nothing here knows about HTTP."""

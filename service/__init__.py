"""digits inference service: FastAPI, dynamic batching, MNIST-style preprocessing."""

"""digits training: the classic MNIST networks, trained, calibrated and exported."""

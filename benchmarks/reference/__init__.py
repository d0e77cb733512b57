"""Reference servers the service is compared with, each a few lines over the same model."""

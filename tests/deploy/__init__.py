"""Checks of the deployment files in docker/: lint, schema, contracts, and real processes."""

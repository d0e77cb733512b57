"""Logs and metrics: what every layer may use, and what uses no layer of the service."""

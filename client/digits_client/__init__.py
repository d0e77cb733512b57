"""The digits service's Python client (:class:`DigitsClient`) and ``digits`` command."""

from digits_client.client import DigitsClient, DigitsError

__all__ = ["DigitsClient", "DigitsError"]

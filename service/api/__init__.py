"""The HTTP API's resources: one router per resource (predict, models, health, page), the
request and response schemas, and what the routes share (dependencies, body intake, answers).
Below the edge (``service.http``), above inference."""

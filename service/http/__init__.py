"""The HTTP edge: what every request passes before and after its route. Request context
(ids, security headers, the access-log line and request metrics), admission (load shedding),
the ``/predict`` fast path, errors as one response shape, and the OpenAPI document."""

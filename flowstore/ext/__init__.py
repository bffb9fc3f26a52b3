"""Integrations with web frameworks: ``flowstore.ext.fastapi`` (the ``fastapi`` extra) and the
framework-neutral problem details they answer errors with (``flowstore.ext.problems``)."""

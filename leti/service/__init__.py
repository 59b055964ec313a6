"""Predictions as a service: the in-process API (``predict``), the HTTP client (``Client``) and the FastAPI app
(``leti.service.app.create_app``, imported on demand so that ``import leti`` stays light)."""

from leti.service.api import AuthError, Client, NotFoundError, TooLargeError, clear_cache, predict

__all__ = ["AuthError", "Client", "NotFoundError", "TooLargeError", "clear_cache", "predict"]

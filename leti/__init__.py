"""leti: estimate neural-network inference latency on phones and boards without running it there.

``leti.predict(archs, target=...)`` predicts in-process; ``leti.Client(url).predict(...)`` asks a ``leti serve``.
"""

__version__ = "0.1.0"

__all__ = ["Client", "predict"]


def __getattr__(name: str):
    # lazy: `import leti` stays instant, the service stack loads on first use
    if name in ("predict", "Client"):
        import leti.service as service

        return getattr(service, name)
    raise AttributeError(f"module 'leti' has no attribute {name!r}")

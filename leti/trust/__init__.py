"""leti.trust: calibrated intervals and out-of-distribution flags for any predictor.

    from leti.trust import calibrate
    tm = calibrate(pred, train_graphs, train_ms, groups=hashes)   # after pred.fit(train_graphs, train_ms)
    a = tm.assess(graphs, pred.predict(graphs), coverage=0.9)
    a.interval_ms, a.in_distribution, a.why

See docs/trust.md.
"""

from __future__ import annotations

from leti.trust.conformal import DEFAULT_COVERAGE, check_coverage

# the models load on first use: checking a --coverage argument must not import the feature stack
_LAZY = {name: "leti.trust.model" for name in ("TRUST_FILE", "Assessment", "TrustModel", "calibrate", "load")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'leti.trust' has no attribute {name!r}")


__all__ = ["DEFAULT_COVERAGE", "check_coverage", *_LAZY]

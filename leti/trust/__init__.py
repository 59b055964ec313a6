"""leti.trust: calibrated intervals and out-of-distribution flags for any predictor.

    from leti.trust import calibrate
    tm = calibrate(pred, train_graphs, train_ms, groups=hashes)   # after pred.fit(train_graphs, train_ms)
    a = tm.assess(graphs, pred.predict(graphs), coverage=0.9)
    a.interval_ms, a.in_distribution, a.why

See docs/trust.md.
"""

from __future__ import annotations

from leti.trust.conformal import DEFAULT_COVERAGE, check_coverage
from leti.trust.model import TRUST_FILE, Assessment, TrustModel, calibrate, load

__all__ = [
    "DEFAULT_COVERAGE",
    "TRUST_FILE",
    "Assessment",
    "TrustModel",
    "calibrate",
    "check_coverage",
    "load",
]

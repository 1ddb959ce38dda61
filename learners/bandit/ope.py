"""Online off-policy evaluation from logged propensities: IPS, SNIPS and doubly robust.

For a target policy π evaluated on data logged by a policy with propensities p (of the logged action
a), reward r and a reward model r̂:

* IPS   = (1/n) Σ π(a|x)/p · r
* SNIPS = Σ π(a|x)/p · r / Σ π(a|x)/p
* DR    = (1/n) Σ [ Σ_b π(b|x) r̂(x,b) + π(a|x)/p · (r − r̂(x,a)) ]

References
----------
.. [1] Dudík, M., Langford, J. and Li, L. (2011). Doubly Robust Policy Evaluation and Learning. ICML.
.. [2] Swaminathan, A. and Joachims, T. (2015). The Self-Normalized Estimator for Counterfactual
   Learning. NeurIPS.

Examples
--------
>>> import numpy as np
>>> est = OffPolicyEstimate()
>>> est.update(w=np.array([2.0, 0.0]), reward=np.array([1.0, 0.0]),
...            dm=np.array([0.5, 0.5]), rhat=np.array([0.5, 0.5]))
>>> {k: round(v, 3) for k, v in est.values().items()}
{'ips': 1.0, 'snips': 1.0, 'dr': 1.0}
"""

from __future__ import annotations

import numpy as np


class OffPolicyEstimate:
    """Running sums for one target policy; ``values()`` gives the three estimates."""

    def __init__(self) -> None:
        self._sums = np.zeros(5)  # n, Σ w r, Σ w, Σ dr terms, Σ (w r)²

    def update(self, w: np.ndarray, reward: np.ndarray, dm: np.ndarray, rhat: np.ndarray) -> None:
        """Adds rows: importance weights w = π(a|x)/p, rewards, Σ_b π(b|x) r̂(x,b), r̂(x,a)."""
        wr = w * reward
        self._sums += (len(w), wr.sum(), w.sum(), (dm + w * (reward - rhat)).sum(), (wr**2).sum())

    def update_one(self, w: float, reward: float, dm: float, rhat: float) -> None:
        """:meth:`update` for one logged decision (plain floats)."""
        wr = w * reward
        s = self._sums
        s[0] += 1.0
        s[1] += wr
        s[2] += w
        s[3] += dm + w * (reward - rhat)
        s[4] += wr * wr

    @property
    def n(self) -> int:
        return int(self._sums[0])

    def values(self) -> dict[str, float]:
        n, swr, sw, sdr, _ = self._sums
        if n == 0:
            return {"ips": float("nan"), "snips": float("nan"), "dr": float("nan")}
        return {"ips": float(swr / n), "snips": float(swr / sw) if sw > 0 else float("nan"), "dr": float(sdr / n)}

    def ips_stderr(self) -> float:
        n, swr, _, _, swr2 = self._sums
        if n < 2:
            return float("inf")
        var = swr2 / n - (swr / n) ** 2
        return float(np.sqrt(max(var, 0.0) / n))

    def to_array(self) -> np.ndarray:
        return self._sums.copy()

    def load(self, arr: np.ndarray) -> None:
        self._sums = np.array(arr, dtype=np.float64)

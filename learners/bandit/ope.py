"""Online off-policy evaluation from logged propensities: IPS, SNIPS and doubly robust.

For a target policy π evaluated on data logged by a policy with propensities p (of the logged action
a), reward r and a reward model r̂:

* IPS   = (1/n) Σ π(a|x)/p · r
* SNIPS = Σ π(a|x)/p · r / Σ π(a|x)/p
* DR    = (1/n) Σ [ Σ_b π(b|x) r̂(x,b) + π(a|x)/p · (r − r̂(x,a)) ]

:class:`OffPolicyEstimate` keeps the running sums the daemon checkpoints; :class:`IntervalEstimate`
adds what a report on logged data needs: a normal confidence interval for each estimator (from the
per-row terms; for SNIPS by the delta method), the direct-method estimate, the effective sample size
and support diagnostics. :class:`MeanEstimate` is a mean with its interval (the logged policy's value).

References
----------
.. [1] Dudík, M., Langford, J. and Li, L. (2011). Doubly Robust Policy Evaluation and Learning. ICML.
.. [2] Swaminathan, A. and Joachims, T. (2015). The Self-Normalized Estimator for Counterfactual
   Learning. NeurIPS.
.. [3] Owen, A. B. (2013). Monte Carlo theory, methods and examples, ch. 9 (importance sampling:
   effective sample size (Σw)²/Σw², the delta-method variance of the self-normalized estimator).

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

import math
from statistics import NormalDist

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


def z_value(confidence: float) -> float:
    """The two-sided normal quantile of a confidence level (1.96 for 0.95).

    >>> round(z_value(0.95), 3)
    1.96
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} is not allowed; allowed: a number in (0, 1)")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _interval(value: float, se: float, n: int, z: float) -> dict[str, float | int | list[float] | None]:
    if n == 0 or not math.isfinite(value):
        return {"value": None, "stderr": None, "ci": None, "n": n}
    if not math.isfinite(se):
        return {"value": value, "stderr": None, "ci": None, "n": n}
    return {"value": value, "stderr": se, "ci": [value - z * se, value + z * se], "n": n}


def _mean_se(n: float, s: float, s2: float) -> tuple[float, float]:
    """Mean and standard error of the mean (sample variance, n − 1) from n, Σx, Σx²."""
    if n == 0:
        return float("nan"), float("nan")
    mean = s / n
    if n < 2:
        return mean, float("inf")
    var = max(s2 - s * mean, 0.0) / (n - 1)
    return mean, math.sqrt(var / n)


class MeanEstimate:
    """A running mean with its normal confidence interval (the logged policy's average reward).

    >>> m = MeanEstimate()
    >>> m.update(np.array([0.0, 1.0, 1.0, 0.0]))
    >>> r = m.summary(0.95)
    >>> r["value"], r["n"], round(r["stderr"], 4)
    (0.5, 4, 0.2887)
    """

    def __init__(self) -> None:
        self._sums = np.zeros(3)  # n, Σx, Σx²

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        self._sums += (len(x), x.sum(), (x * x).sum())

    @property
    def n(self) -> int:
        return int(self._sums[0])

    def summary(self, confidence: float = 0.95) -> dict:
        n, s, s2 = self._sums.tolist()
        mean, se = _mean_se(n, s, s2)
        return _interval(mean, se, int(n), z_value(confidence))


class IntervalEstimate:
    """IPS, SNIPS, DR and the direct method for one target policy, with confidence intervals.

    Rows come as the target's probability π(a|x) of the logged action a, the logged propensity p
    (NaN where the log has none: such a row enters the direct method only), the reward r,
    Σ_b π(b|x) r̂(x,b) and r̂(x,a). With w = π(a|x)/p the per-row terms are w·r (IPS) and
    Σ_b π(b|x) r̂(x,b) + w·(r − r̂(x,a)) (DR): each interval is value ± z·s/√n with s their sample
    standard deviation. SNIPS = Σ w r / Σ w has the delta-method standard error
    √(Σ w² (r − SNIPS)²) / Σ w. The direct method's interval covers the sampling noise of its
    terms only, not the reward model's bias. When the target policies and the reward model of row t
    depend on earlier rows only, the IPS and DR terms are martingale differences around the
    policies' average value, and the same intervals hold.

    Diagnostics: the effective sample size (Σ w)²/Σ w², the largest weight, the mean weight (1 in
    expectation when the propensities are right and the logger gives every offered action a
    chance) with its interval, and ``unsupported_mass``: the target's probability on actions the
    logger never takes (1 − π(a|x) on rows logged with p = 1), a lower bound of what IPS cannot see.

    >>> est = IntervalEstimate()
    >>> est.update(pi=np.array([1.0, 0.0, 0.5]), prop=np.array([0.5, 0.5, np.nan]),
    ...            reward=np.array([1.0, 0.0, 1.0]), dm=np.array([0.5, 0.5, 0.5]), rhat=np.array([0.5, 0.5, 0.5]))
    >>> r = est.summary(0.95)
    >>> r["ips"]["value"], r["snips"]["value"], r["dr"]["value"], r["direct_method"]["n"], r["ess"]
    (1.0, 1.0, 1.0, 3, 1.0)
    """

    # n, Σw, Σw², Σwr, Σ(wr)², Σw²r, Σdr, Σdr², n_dm, Σdm, Σdm², unsupported mass, max w, n with p = 1
    _SIZE = 14

    def __init__(self) -> None:
        self._sums = np.zeros(self._SIZE)

    def update(self, pi: np.ndarray, prop: np.ndarray, reward: np.ndarray, dm: np.ndarray,
               rhat: np.ndarray) -> None:
        """Adds rows (arrays of one entry per row; ``prop`` NaN: no propensity logged)."""
        pi, prop, reward, dm, rhat = (np.asarray(a, dtype=np.float64) for a in (pi, prop, reward, dm, rhat))
        s = self._sums
        s[8] += len(dm)
        s[9] += dm.sum()
        s[10] += (dm * dm).sum()
        has = ~np.isnan(prop)
        if not has.any():
            return
        pi, prop, reward, dm, rhat = pi[has], prop[has], reward[has], dm[has], rhat[has]
        w = pi / prop
        wr = w * reward
        dr = dm + w * (reward - rhat)
        one = prop == 1.0
        s[:8] += (len(w), w.sum(), (w * w).sum(), wr.sum(), (wr * wr).sum(), (w * wr).sum(), dr.sum(),
                  (dr * dr).sum())
        s[11] += (1.0 - pi[one]).sum()
        s[12] = max(s[12], float(w.max()))
        s[13] += one.sum()

    @property
    def n(self) -> int:
        """Rows with a propensity (the unbiased estimators' sample)."""
        return int(self._sums[0])

    @property
    def n_deterministic(self) -> int:
        """Rows whose logged propensity is 1."""
        return int(self._sums[13])

    def summary(self, confidence: float = 0.95) -> dict:
        """Each estimator's ``value``, ``stderr``, ``ci`` ([low, high]) and ``n``, and the diagnostics."""
        z = z_value(confidence)
        n, sw, sw2, swr, swr2, sw2r, sdr, sdr2, ndm, sdm, sdm2, unsup, wmax, _ = self._sums.tolist()
        ni = int(n)
        ips, ips_se = _mean_se(n, swr, swr2)
        dr, dr_se = _mean_se(n, sdr, sdr2)
        dm, dm_se = _mean_se(ndm, sdm, sdm2)
        wbar, w_se = _mean_se(n, sw, sw2)
        if sw > 0:
            snips = swr / sw
            snips_se = math.sqrt(max(swr2 - 2.0 * snips * sw2r + snips * snips * sw2, 0.0)) / sw if n >= 2 \
                else float("inf")
        else:
            snips, snips_se = float("nan"), float("nan")
        return {
            "ips": _interval(ips, ips_se, ni, z),
            "snips": _interval(snips, snips_se, ni, z),
            "dr": _interval(dr, dr_se, ni, z),
            "direct_method": _interval(dm, dm_se, int(ndm), z),
            "ess": sw * sw / sw2 if sw2 > 0 else 0.0,
            "max_weight": wmax if n else None,
            "mean_weight": _interval(wbar, w_se, ni, z),
            "unsupported_mass": unsup / n if n else None,
        }

"""Online ridge regression over dense arrays (one model), a thin class over the kernels."""

from __future__ import annotations

import numpy as np

from . import _kernels as K


class OnlineRidge:
    """Exact online ridge regression: after any prefix of rows, ``theta_`` equals the batch ridge
    solution (λI + XᵀX)⁻¹Xᵀy on that prefix, updated in O(d²) per row by Sherman–Morrison.

    Parameters
    ----------
    n_features
        Dimension d of the rows.
    lam
        Ridge penalty λ > 0.

    Examples
    --------
    >>> import numpy as np
    >>> r = OnlineRidge(2, lam=1e-6)
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> r.learn(X, np.array([1.0, 2.0, 3.0]))
    >>> np.round(r.predict(np.array([[2.0, 1.0]])), 4)  # doctest: -NUMBER
    array([4.])
    >>> r = OnlineRidge(1, lam=3.0)  # one row x = 1, y = 2: θ = 2/(λ + 1)
    >>> r.learn(np.array([[1.0]]), np.array([2.0]))
    >>> r.theta_.tolist()  # doctest: -NUMBER
    [0.5]
    """

    def __init__(self, n_features: int, lam: float = 1.0):
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        self.n_features = n_features
        self.lam = lam
        self._A_inv = np.eye(n_features)[None, :, :] / lam
        self._theta = np.zeros((1, n_features))

    @property
    def theta_(self) -> np.ndarray:
        return self._theta[0].copy()

    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}), got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or inf")
        return X

    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        X = self._check(X)
        y = np.ascontiguousarray(y, dtype=np.float64)
        if y.shape != (X.shape[0],) or not np.isfinite(y).all():
            raise ValueError("y must be a finite vector with one value per row")
        K.ridge_update_rows(self._A_inv, self._theta, X, np.zeros(X.shape[0], np.int64), y)

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check(X)
        out = np.empty(X.shape[0])
        K.ridge_predict_rows(self._theta, X, np.zeros(X.shape[0], np.int64), out)
        return out

    def snapshot(self) -> dict[str, np.ndarray]:
        return {"A_inv": self._A_inv.copy(), "theta": self._theta.copy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self._A_inv = np.array(state["A_inv"], dtype=np.float64)
        self._theta = np.array(state["theta"], dtype=np.float64)

"""Numba kernels of the contextual-bandit family: exploration rules, sampling, the neural oracle.

Batches are in CSR layout: event ``i`` offers the actions at positions ``indptr[i]:indptr[i+1]`` of
the flat arrays (``slots``, ``scores``, ``probs``...). Scores are predicted rewards (higher is better).
Every random draw comes from :mod:`learners._random`, keyed by (seed, event key, stream).
"""

from __future__ import annotations

import numpy as np

from .._numba import jit
from .._random import draw_normal, draw_uniform

# Streams of the per-event draws (kept apart so that no two uses share a number).
STREAM_CHOOSE = 0
STREAM_TS = 1_000_000
STREAM_PERTURB = 2_000_000
STREAM_PERTURB_LEARN = 3_000_000


@jit
def argmax_range(scores, lo, hi):
    """Position of the first maximum of scores[lo:hi]."""
    best = lo
    for p in range(lo + 1, hi):
        if scores[p] > scores[best]:
            best = p
    return best


@jit
def igw_pmf(scores, indptr, gamma, out):
    """SquareCB's inverse gap weighting: p_a = 1/(K + γ(ŝ_best − ŝ_a)), the rest on the best action."""
    for i in range(indptr.shape[0] - 1):
        lo, hi = indptr[i], indptr[i + 1]
        k = hi - lo
        b = argmax_range(scores, lo, hi)
        rest = 0.0
        for p in range(lo, hi):
            if p != b:
                out[p] = 1.0 / (k + gamma * (scores[b] - scores[p]))
                rest += out[p]
        out[b] = 1.0 - rest


@jit
def fastcb_pmf(scores, indptr, gamma, out):
    """FastCB's weighting on costs c = clip(1 − ŝ, 0, 1): p_a = c_b/(K·c_b + γ(c_a − c_b)).

    With c_b = 0 (a sure reward) all mass goes to the best action, as the rule gives in the limit.
    """
    for i in range(indptr.shape[0] - 1):
        lo, hi = indptr[i], indptr[i + 1]
        k = hi - lo
        b = argmax_range(scores, lo, hi)
        cb = min(max(1.0 - scores[b], 0.0), 1.0)
        rest = 0.0
        for p in range(lo, hi):
            if p != b:
                ca = min(max(1.0 - scores[p], 0.0), 1.0)
                denom = k * cb + gamma * (ca - cb)
                out[p] = cb / denom if denom > 0.0 else 0.0
                rest += out[p]
        out[b] = 1.0 - rest


@jit
def epsgreedy_pmf(scores, indptr, eps, out):
    """ε-greedy: ε/K on every action, 1 − ε more on the best."""
    for i in range(indptr.shape[0] - 1):
        lo, hi = indptr[i], indptr[i + 1]
        k = hi - lo
        b = argmax_range(scores, lo, hi)
        for p in range(lo, hi):
            out[p] = eps / k
        out[b] += 1.0 - eps


@jit
def ucb_pmf(scores, widths, indptr, alpha, out):
    """LinUCB: all mass on argmax(ŝ + α·width), split evenly among exact ties."""
    for i in range(indptr.shape[0] - 1):
        lo, hi = indptr[i], indptr[i + 1]
        best = -np.inf
        for p in range(lo, hi):
            u = scores[p] + alpha * widths[p]
            if u > best:
                best = u
        n = 0
        for p in range(lo, hi):
            if scores[p] + alpha * widths[p] == best:
                n += 1
        for p in range(lo, hi):
            out[p] = 1.0 / n if scores[p] + alpha * widths[p] == best else 0.0


@jit
def ts_pmf(scores, widths, indptr, scale, seed, keys, n_samples, out):
    """Linear Thompson sampling's action distribution, estimated from ``n_samples`` posterior draws.

    For disjoint (or shared) Gaussian ridge posteriors the sampled score of action a is exactly
    N(ŝ_a, (scale·width_a)²), independent across actions, so no matrix is factorised. The
    probability that each action wins is estimated by counting wins over draws seeded by the event
    key; the decision is then sampled from this distribution, so the logged propensity is exactly
    the probability the action was drawn with.
    """
    for i in range(indptr.shape[0] - 1):
        lo, hi = indptr[i], indptr[i + 1]
        for p in range(lo, hi):
            out[p] = 0.0
        for s in range(n_samples):
            best = -np.inf
            bp = lo
            for p in range(lo, hi):
                z = draw_normal(seed, keys[i], STREAM_TS + s * (hi - lo) + (p - lo))
                v = scores[p] + scale * widths[p] * z
                if v > best:
                    best = v
                    bp = p
            out[bp] += 1.0
        for p in range(lo, hi):
            out[p] /= n_samples


@jit
def apply_bounds(probs, scores, indptr, floor, cap):
    """Exploration floor then cap, in place.

    Floor: every non-best action gets at least ``floor`` (the best action gives up the mass).
    Cap: the total mass off the best action is at most ``cap`` (scaled down; the cap wins).
    """
    for i in range(indptr.shape[0] - 1):
        lo, hi = indptr[i], indptr[i + 1]
        b = argmax_range(scores, lo, hi)
        off = 0.0
        for p in range(lo, hi):
            if p != b:
                if probs[p] < floor:
                    probs[p] = floor
                off += probs[p]
        if off > cap:
            f = cap / off if off > 0.0 else 0.0
            off = 0.0
            for p in range(lo, hi):
                if p != b:
                    probs[p] *= f
                    off += probs[p]
        probs[b] = max(1.0 - off, 0.0)


@jit
def sample_actions(probs, scores, indptr, seed, keys, chosen, chosen_prob, explored):
    """Draws each event's action by inverse CDF with u = U(seed, key); flags draws off the best."""
    for i in range(indptr.shape[0] - 1):
        lo, hi = indptr[i], indptr[i + 1]
        u = draw_uniform(seed, keys[i], STREAM_CHOOSE)
        total = 0.0
        for p in range(lo, hi):
            total += probs[p]
        target = u * total
        acc = 0.0
        pick = hi - 1
        while pick > lo and probs[pick] <= 0.0:
            pick -= 1
        for p in range(lo, hi):
            acc += probs[p]
            if target < acc and probs[p] > 0.0:
                pick = p
                break
        chosen[i] = pick - lo
        chosen_prob[i] = probs[pick] / total
        explored[i] = pick != argmax_range(scores, lo, hi)


@jit
def sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@jit
def mlp_hidden(x, W1, b1, h):
    for j in range(W1.shape[0]):
        s = b1[j]
        for q in range(x.shape[0]):
            s += W1[j, q] * x[q]
        h[j] = s if s > 0.0 else 0.0


@jit
def mlp_scores(X, indptr, slots, W1, b1, W2, b2, kl, sigma, seed, keys, out):
    """Predicted rewards of a one-hidden-layer ReLU network with one output per action slot.

    Each prediction gets the random perturbation ε ~ N(0, σ²) of Deb et al. (2023), drawn from
    (seed, event key, slot), added to the output logit; ``kl`` selects the sigmoid output (KL loss).
    """
    h = np.empty(W1.shape[0])
    for i in range(X.shape[0]):
        mlp_hidden(X[i], W1, b1, h)
        for p in range(indptr[i], indptr[i + 1]):
            k = slots[p]
            z = b2[k]
            for j in range(h.shape[0]):
                z += W2[k, j] * h[j]
            if sigma > 0.0:
                z += sigma * draw_normal(seed, keys[i], STREAM_PERTURB + k)
            out[p] = sigmoid(z) if kl else z


@jit
def mlp_update(X, slots, y, keys, W1, b1, W2, b2, kl, sigma, lr, seed):
    """One SGD step per row on the chosen action's output, rows in order.

    Squared loss ½(f − y)² when ``kl`` is false; the Bernoulli KL/cross-entropy loss of a sigmoid
    output otherwise (its gradient in the logit is σ(z) − y). The perturbed prediction enters the
    loss with its own draw.
    """
    H = W1.shape[0]
    h = np.empty(H)
    gh = np.empty(H)
    for i in range(X.shape[0]):
        x = X[i]
        k = slots[i]
        mlp_hidden(x, W1, b1, h)
        z = b2[k]
        for j in range(H):
            z += W2[k, j] * h[j]
        if sigma > 0.0:
            z += sigma * draw_normal(seed, keys[i], STREAM_PERTURB_LEARN + k)
        g = (sigmoid(z) - y[i]) if kl else (z - y[i])
        for j in range(H):
            gh[j] = g * W2[k, j] if h[j] > 0.0 else 0.0
            W2[k, j] -= lr * g * h[j]
        b2[k] -= lr * g
        for j in range(H):
            if gh[j] != 0.0:
                for q in range(x.shape[0]):
                    W1[j, q] -= lr * gh[j] * x[q]
                b1[j] -= lr * gh[j]

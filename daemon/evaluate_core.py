"""One bandit pipeline's policies evaluated progressively over logged decisions (``eddy evaluate``).

Rows are taken in log order, in blocks of ``learn_every`` rows (the pipeline's
``learn_every_events``: the daemon applies rewards in blocks of that many events too). For each
block:

1. the contexts and available actions are encoded exactly as the pipeline's adapter encodes an
   event (its ``n_features``, hashing, ``crosses``, action features): rows the daemon would
   dead-letter are skipped with its reason;
2. every target policy gives its distribution over each row's available actions: the pipeline's
   learner and its ``shadow_learners`` having learned only the rows of earlier blocks (so never
   row t itself nor anything after it), and any fixed policy;
3. a direct-method reward model r̂ (ridge regression per action on the same encoded context, or
   the hashed linear model for hashed pipelines, unweighted), fitted on the earlier blocks' rows
   only and clipped to the range of the rewards seen so far, predicts each available action's
   reward;
4. the IPS, SNIPS, DR and direct-method terms of every target are added
   (:class:`learners.bandit.ope.IntervalEstimate`);
5. the learners and r̂ then learn the block's logged (context, action, reward), with the logged
   propensity as the feedback's ``prob`` (1 where none was logged): the ridge and neural oracles
   regress unweighted, the hashed oracle weights each row by 1/prob, as it would on eddy's own
   feedback.

Because each policy and r̂ depend only on earlier rows, the IPS and DR terms are martingale
differences: their means estimate the average value of the sequence of policies the learner went
through on this log (what it would have earned deciding these contexts while learning from the
logger's choices; deployed, it would learn from its own), and the normal intervals hold.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from learners._hashing import event_keys
from learners.bandit import BanditLearner, HashedBanditLearner
from learners.bandit.ope import IntervalEstimate, MeanEstimate

from .adapters.bandit import BanditAdapter, rows_csr, rows_matrix
from .evaluate_logs import LogRow
from .metrics import DaemonMetrics
from .records import MAX_ID_LEN, BadRecord, RecordRules

FixedPolicy = Callable[[Any, Sequence[str]], Sequence[float]]  # (context, available action ids) -> probabilities
TINY_PROPENSITY = 0.01  # (daemon.evaluate repeats it)


class Target:
    """One evaluated policy: a learner (``role`` learner or shadow) or a fixed function (policy)."""

    def __init__(self, name: str, role: str, learner: Any = None, fn: FixedPolicy | None = None):
        self.name, self.role, self.learner, self.fn = name, role, learner, fn
        self.est = IntervalEstimate()
        self.error: str | None = None

    def probs(self, batch: dict[str, Any], rows: list[LogRow], offers: list[list[str]], nnz: int) -> np.ndarray:
        if self.fn is None:
            return np.asarray(self.learner.process(batch)["probs"], dtype=np.float64)
        fn = self.fn
        got = [list(fn(r.context, offered)) for r, offered in zip(rows, offers, strict=True)]
        lens = np.fromiter(map(len, got), dtype=np.int64, count=len(got))
        want = np.fromiter(map(len, offers), dtype=np.int64, count=len(offers))
        out = np.array([x for g in got for x in g], dtype=np.float64) if (lens == want).all() else None
        if out is not None and np.isfinite(out).all() and (out >= 0).all():
            sums = np.add.reduceat(out, np.concatenate([[0], np.cumsum(want)[:-1]]))
            if (np.abs(sums - 1.0) <= 1e-6).all():
                return out
        bad = next(i for i, (g, o) in enumerate(zip(got, offers, strict=True))
                   if len(g) != len(o) or not all(math.isfinite(x) and x >= 0 for x in g) or abs(sum(g) - 1) > 1e-6)
        raise ValueError(f"policy {self.name!r} must give {len(offers[bad])} probabilities summing to 1 for row "
                         f"{rows[bad].index}, got {got[bad]}")


class PipelineEvaluation:
    """The targets of one bandit pipeline config ``pc``, fed parsed log rows in order."""

    def __init__(self, pc: dict[str, Any], learn_every: int | None = None,
                 policies: dict[str, FixedPolicy] | None = None, include_learners: bool = True):
        self.pc = pc
        self.name = pc["name"]
        self.adapter = a = BanditAdapter(pc, DaemonMetrics(), RecordRules(pc["max_message_bytes"], 0.0))
        self.block = int(learn_every or pc["learn_every_events"])
        if self.block < 1:
            raise ValueError(f"learn_every={self.block!r} is not allowed; allowed: >= 1")
        self.actions = list(a.actions)
        self.slot = {s: i for i, s in enumerate(self.actions)}
        self.targets: list[Target] = []
        if include_learners:
            self.targets.append(Target(pc["learner"], "learner", a.learner))
            self.targets += [Target(s, "shadow", lrn) for s, lrn in a.shadows.items()]
        for name, fn in (policies or {}).items():
            self.targets.append(Target(name, "policy", fn=fn))
        params = a.params
        common: dict[str, Any] = {"actions": tuple(self.actions), "max_actions": int(params.get("max_actions", 256)),
                  "policy": "epsilon-greedy", "epsilon": 0.0, "seed": int(params.get("seed", 0))}
        self.model: BanditLearner = (HashedBanditLearner(n_features=a.d, importance_weights=False, **common)
                                     if a.sparse else BanditLearner(n_features=a.d, oracle="ridge", **common))
        self.model_kind = ("a hashed linear model shared by the actions" if a.sparse
                           else "ridge regression per action")
        self.pending: list[LogRow] = []
        self.skipped: Counter[str] = Counter()
        self.logged = MeanEstimate()
        self.rows = 0
        self.with_prop = 0
        self.deterministic = 0
        self.tiny = 0
        self.min_prop = math.inf
        self.max_prop = 0.0
        self.rmin, self.rmax = math.inf, -math.inf
        self.model_error: str | None = None

    # -- the rows ---------------------------------------------------------------------------------
    def feed(self, rows: list[LogRow]) -> None:
        self.pending.extend(rows)
        b = self.block
        if len(self.pending) >= b:
            full = len(self.pending) // b * b
            for lo in range(0, full, b):
                self._block(self.pending[lo:lo + b])
            del self.pending[:full]

    def finish(self) -> None:
        if self.pending:
            self._block(self.pending)
            self.pending = []

    def _encode(self, rows: list[LogRow]) -> tuple[list[LogRow], list[Any], list[list[str]], list[int]]:
        kept: list[LogRow] = []
        events: list[Any] = []
        offers: list[list[str]] = []
        pos: list[int] = []
        decode = self.adapter.decode
        for r in rows:
            obj: dict[str, Any] = {"id": r.id if len(r.id) <= MAX_ID_LEN else f"row-{r.index}", "features": r.context}
            if r.actions is not None:
                obj["actions"] = r.actions
            try:
                ev: Any = decode(obj, None)
            except BadRecord as e:
                self.skipped[e.reason] += 1
                continue
            offered = ev.actions if ev.actions is not None else self.actions
            try:
                p = self.slot[r.action] if ev.actions is None else offered.index(r.action)
            except (KeyError, ValueError):
                self.skipped["action_not_offered"] += 1
                continue
            kept.append(r)
            events.append(ev)
            offers.append(offered)
            pos.append(p)
        return kept, events, offers, pos

    def _block(self, rows: list[LogRow]) -> None:
        rows, events, offers, pos = self._encode(rows)
        if not rows:
            return
        a = self.adapter
        if a.sparse:
            ptr, idx, val = rows_csr(events)
            ctx: dict[str, Any] = {"x_indptr": ptr, "x_index": idx, "x_value": val}
        else:
            X = rows_matrix(events, a.d)
            ok = np.isfinite(X).all(axis=1)
            if not ok.all():
                self.skipped["non_finite"] += int((~ok).sum())
                keep = np.flatnonzero(ok).tolist()
                rows, events = [rows[i] for i in keep], [events[i] for i in keep]
                offers, pos = [offers[i] for i in keep], [pos[i] for i in keep]
                if not rows:
                    return
                X = X[ok]
            ctx = {"X": X}
        n = len(rows)
        sizes = np.fromiter(map(len, offers), dtype=np.int64, count=n)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(sizes, out=indptr[1:])
        starts = indptr[:-1]
        flat = starts + np.asarray(pos, dtype=np.int64)
        nnz = int(indptr[-1])
        keys = event_keys([e.id for e in events])
        batch: dict[str, Any] = {"event_key": keys, **ctx}
        if any(e.actions is not None for e in events):
            batch["action_indptr"] = indptr
            batch["action_ids"] = [x for o in offers for x in o]
        if a.n_af:
            batch["action_features"] = np.concatenate([e.afs for e in events])
        prop = np.array([r.propensity for r in rows])
        reward = np.array([r.reward for r in rows])
        rhat = self._rhat(batch, nnz)
        for t in self.targets:
            if t.error is not None:
                continue
            if t.fn is not None:
                probs = t.probs(batch, rows, offers, nnz)  # (a fixed policy's wrong output is the caller's bug)
            else:
                try:
                    probs = t.probs(batch, rows, offers, nnz)
                except Exception as e:  # a learner failing on these logs: reported, the others go on
                    t.error = f"{type(e).__name__}: {e}"
                    continue
            t.est.update(probs[flat], prop, reward, np.add.reduceat(probs * rhat, starts), rhat[flat])
        self._tally(prop, reward)
        fb: dict[str, Any] = {"event_key": keys, **ctx, "action": [r.action for r in rows], "reward": reward,
                              "prob": np.where(np.isnan(prop), 1.0, prop)}
        if a.n_af:
            fb["action_features"] = np.array([e.afs[p] for e, p in zip(events, pos, strict=True)])
        for t in self.targets:
            if t.learner is not None and t.error is None:
                try:
                    t.learner.learn(fb)
                except Exception as e:
                    t.error = f"{type(e).__name__}: {e}"
        if self.model_error is None:
            try:
                self.model.learn(fb)
            except Exception as e:
                self.model_error = f"{type(e).__name__}: {e}"
        self.rmin, self.rmax = min(self.rmin, float(reward.min())), max(self.rmax, float(reward.max()))

    def _rhat(self, batch: dict[str, Any], nnz: int) -> np.ndarray:
        """r̂ of every available action, from the rows of earlier blocks (0 before any)."""
        if self.model_error is not None or not math.isfinite(self.rmin):
            return np.zeros(nnz)
        try:
            scores = np.asarray(self.model.process(batch)["scores"], dtype=np.float64)
        except Exception as e:
            self.model_error = f"{type(e).__name__}: {e}"
            return np.zeros(nnz)
        return np.clip(np.nan_to_num(scores), self.rmin, self.rmax)

    def _tally(self, prop: np.ndarray, reward: np.ndarray) -> None:
        self.logged.update(reward)
        self.rows += len(prop)
        p = prop[~np.isnan(prop)]
        self.with_prop += len(p)
        if len(p):
            self.deterministic += int((p == 1.0).sum())
            self.tiny += int((p < TINY_PROPENSITY).sum())
            self.min_prop = min(self.min_prop, float(p.min()))
            self.max_prop = max(self.max_prop, float(p.max()))

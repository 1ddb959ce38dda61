"""``eddy evaluate``: the configured bandit learners estimated off-policy on another router's logs.

A team with months of logs from its current router (context, the action it chose, the probability
it chose it with, the reward) learns here what eddy's learners would have earned on that traffic,
before any of it goes through eddy::

    eddy evaluate --config eddy.toml --logs router.jsonl --map propensity=p,action=chosen --out report.json

For each bandit pipeline of the config (or ``--pipeline NAME``), its learner and its
``shadow_learners`` are run progressively over the log in log order (:mod:`daemon.evaluate_core`
says how: each row is decided by a learner that has learned only earlier rows, and every row is
then learned with its logged action, reward and propensity), and each is estimated by

* IPS and SNIPS (importance weights π(a|x)/p of the logged propensity p), and DR (with a
  progressive direct-method reward model fitted on earlier rows only);
* a normal confidence interval for each (value ± z·stderr: the per-row terms' standard error; for
  SNIPS the delta method), at ``--confidence`` (0.95);
* the effective sample size (Σw)²/Σw², the largest weight, the mean weight (1 when propensities are
  right) and the probability the policy puts where the logger never goes;
* the direct-method estimate (the reward model's prediction under the policy), labelled biased.

The report also gives the logged policy's own value (the mean reward) with its interval, the rows
read, used and skipped (with reasons; a bad row never stops it), and warnings: without
propensities, or with propensities all 1 (a deterministic logger), no unbiased estimate exists:
IPS, SNIPS and DR are left out (null) and only the direct method is reported; tiny propensities,
low effective sample sizes and mean weights away from 1 are called out with their numbers.

Logs are JSON lines (``.gz`` too, ``-`` for stdin) or Parquet (with pyarrow: ``pip install
'eddyd[parquet]'``), read in chunks (:mod:`daemon.evaluate_logs`, which also documents ``--map``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import config
from .config import Config, ConfigError
from .evaluate_logs import REASONS, LogRow, Mapping, guess_format, read

if TYPE_CHECKING:  # (the learners and numba load when an evaluation runs, not with the command line)
    from .evaluate_core import FixedPolicy, PipelineEvaluation, Target

TINY_PROPENSITY = 0.01  # (evaluate_core's, repeated: importing it loads the learners)

LOW_ESS_FRACTION = 0.1
LOW_ESS = 100
WEIGHT_Z = 3.29  # the mean-weight check's two-sided level: 0.1% false alarms on right propensities


def evaluate(cfg: Config, logs: str | Iterable[Any], *, pipeline: str | None = None,
             mapping: str | Mapping | None = None, confidence: float = 0.95, fmt: str | None = None,
             learn_every: int | None = None,
             policies: dict[str, FixedPolicy] | None = None, include_learners: bool = True) -> dict[str, Any]:
    """The evaluation report (a JSON-able dict) of the config's bandit pipelines on ``logs`` (a path,
    or an iterable of row objects). ``policies``: fixed policies evaluated alongside, each a function
    (the row's context as :mod:`daemon.evaluate_logs` normalises it: strings one-hot as
    ``name=value``; the available action ids) → one probability per action; ``include_learners=False``
    evaluates only those. ``learn_every``: block size (default: each pipeline's
    ``learn_every_events``)."""
    import numpy as np

    import learners
    from learners.bandit.ope import MeanEstimate, z_value

    from .evaluate_core import PipelineEvaluation

    z_value(confidence)  # (raises on a bad level before any reading)
    m = mapping if isinstance(mapping, Mapping) else Mapping.parse(mapping)
    pcs = [p for p in cfg.pipelines if pipeline in (None, p["name"])]
    if not pcs:
        raise ConfigError(f"no pipeline {pipeline!r}; pipelines: {', '.join(p['name'] for p in cfg.pipelines)}")
    bandits = [p for p in pcs if learners.family_of(p["learner"]) == "bandit"]
    if not bandits:
        raise ConfigError(f"no bandit pipeline to evaluate among {', '.join(p['name'] for p in pcs)} (eddy evaluate "
                          "estimates bandit learners)")
    evals = [PipelineEvaluation(pc, learn_every, policies, include_learners) for pc in bandits]
    skipped: Counter[str] = Counter()
    read_n = out_of_order = 0
    t_first = t_last = t_max = None
    logged = MeanEstimate()
    for chunk in read(logs, m, fmt):
        rows: list[LogRow] = []
        for r in chunk:
            read_n += 1
            if isinstance(r, str):
                skipped[r] += 1
                continue
            t = r.time
            if t is not None:
                if t_first is None:
                    t_first = t
                t_last = t
                if t_max is not None and t < t_max:
                    out_of_order += 1
                t_max = t if t_max is None else max(t_max, t)
            rows.append(r)
        if rows:
            logged.update(np.array([r.reward for r in rows]))
        for e in evals:
            e.feed(rows)
    for e in evals:
        e.finish()
    warnings = []
    if out_of_order:
        warnings.append(f"{out_of_order} rows have a time earlier than a row before them: rows are evaluated in "
                        "file order (sort the logs by time for a faithful replay)")
    parsed = read_n - sum(skipped.values())
    if read_n and not parsed:
        warnings.append(f"no usable row in {read_n} rows read (check --map: {_mapping_text(m)})")
    return _clean({
        "logs": logs if isinstance(logs, str) else "<rows>",
        "format": (fmt or guess_format(logs)) if isinstance(logs, str) else "rows",
        "mapping": dict(m.columns),
        "confidence": confidence,
        "interval": "normal: value ± z·stderr of the per-row terms (SNIPS: delta method)",
        "rows": {"read": read_n, "parsed": parsed, "skipped": dict(sorted(skipped.items())),
                 "out_of_order_time": out_of_order},
        "time": {"first": t_first, "last": t_last},
        "logged_policy": logged.summary(confidence),
        "pipelines": {e.name: _pipeline_report(e, confidence, m) for e in evals},
        "not_evaluated": {p["name"]: f"a {learners.family_of(p['learner'])} pipeline" for p in pcs if p not in bandits},
        "warnings": warnings,
    })


def _clean(x: Any) -> Any:
    """The report with NaN and inf as None (JSON has neither)."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _mapping_text(m: Mapping) -> str:
    return ",".join(f"{k}={v}" for k, v in m.columns.items())


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _pipeline_report(e: PipelineEvaluation, confidence: float, m: Mapping) -> dict[str, Any]:
    warnings: list[str] = []
    n, k, det = e.rows, e.with_prop, e.deterministic
    status = "ok"
    if n and k == 0:
        status = "no_propensities"
        warnings.append(f"no row has a propensity (field propensity = column {m.columns['propensity']!r}): IPS, "
                        "SNIPS and DR need the probability the logger chose its action with, and without it no "
                        "unbiased estimate exists; only the direct method is reported, and it is biased (a reward "
                        "model fitted on the logs). If the logs have the column, name it: --map propensity=COLUMN")
    elif k and det == k:
        status = "deterministic"
        warnings.append("every logged propensity is 1: the logger was deterministic, so the logs show nothing of "
                        "the actions it did not take, and they admit no unbiased estimate of another policy; IPS, "
                        "SNIPS and DR are left out and only the direct method is reported, which is biased (it "
                        "extrapolates a reward model to actions the logger never took there)")
    elif k < n:
        warnings.append(f"{n - k} of {n} rows have no propensity: IPS, SNIPS and DR use the {k} rows with one "
                        "(unbiased only if which rows lack one does not depend on their rewards); the direct "
                        "method uses all rows")
    if e.tiny:
        warnings.append(f"{e.tiny} rows have a propensity below {TINY_PROPENSITY} (smallest {_fmt(e.min_prop)}, "
                        f"weights up to {_fmt(1 / e.min_prop)}): they dominate the variance of IPS and DR")
    if e.model_error:
        warnings.append(f"the direct-method reward model failed ({e.model_error}): r̂ = 0 from then on")
    note = (f"the reward model's prediction under the policy ({e.model_kind} on the pipeline's encoded context, "
            "fitted on earlier rows): biased; its interval covers sampling noise only")
    policies = {t.name: _policy_report(t, confidence, status, warnings, note) for t in e.targets}
    skipped = dict(sorted(e.skipped.items()))
    return {
        "learner": e.pc["learner"],
        "shadow_learners": list(e.pc["shadow_learners"]),
        "learn_every": e.block,
        "status": status,
        "rows": {"evaluated": n, "with_propensity": k, "propensity_one": det, "skipped": skipped},
        "propensity": {"min": e.min_prop if k else None, "max": e.max_prop if k else None,
                       f"below_{TINY_PROPENSITY}": e.tiny},
        "logged_policy": e.logged.summary(confidence),
        "policies": policies,
        "warnings": warnings,
    }


def _policy_report(t: Target, confidence: float, status: str, warnings: list[str], note: str) -> dict[str, Any]:
    s = t.est.summary(confidence)
    dm = {**s["direct_method"], "biased": True, "note": note}
    out: dict[str, Any] = {"role": t.role, "status": "error" if t.error else status}
    if t.error:
        out["error"] = t.error
        warnings.append(f"{t.name}: failed on these logs ({t.error}); its estimates cover the rows before")
    if status == "ok":
        out.update(ips=s["ips"], snips=s["snips"], dr=s["dr"], direct_method=dm, ess=s["ess"],
                   max_weight=s["max_weight"], mean_weight=s["mean_weight"], unsupported_mass=s["unsupported_mass"])
        n = s["ips"]["n"]
        ess = s["ess"]
        if n and (ess < LOW_ESS or ess < LOW_ESS_FRACTION * n):
            warnings.append(f"{t.name}: effective sample size {ess:.0f} of {n} rows ({ess / n:.1%}): the estimates "
                            f"rest on few rows (largest weight {_fmt(s['max_weight'])}); their intervals may be too "
                            "narrow")
        mw = s["mean_weight"]
        if mw["stderr"] is not None and abs(mw["value"] - 1.0) > WEIGHT_Z * mw["stderr"]:
            warnings.append(f"{t.name}: mean importance weight {mw['value']:.3f} (stderr {mw['stderr']:.3f}) is "
                            f"more than {WEIGHT_Z} standard errors from 1, its expectation: the logged propensities "
                            "may not be the probabilities the logger used, or the logger gives some actions this "
                            "policy takes no chance")
        um = s["unsupported_mass"]
        if um is not None and um > 0.01:
            warnings.append(f"{t.name}: {um:.1%} of its probability lies on actions the logger never takes (rows "
                            "logged with propensity 1): IPS, SNIPS and DR cannot see what those would earn")
    else:
        out.update(ips=None, snips=None, dr=None, direct_method=dm,
                   reason="no unbiased estimate: " + ("no propensities logged" if status == "no_propensities"
                                                      else "the logger was deterministic (every propensity 1)"))
    return out


# -- the table ------------------------------------------------------------------------------------
def _cell(est: dict[str, Any] | None) -> str:
    if not est or est.get("value") is None:
        return "—"
    ci = est.get("ci")
    return f"{est['value']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else f"{est['value']:.4f}"


def table(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    rows = report["rows"]
    skipped = ", ".join(f"{k} {v}" for k, v in rows["skipped"].items())
    lines = [f"eddy evaluate: {report['logs']} ({report['format']}): {rows['read']} rows read, "
             f"{rows['parsed']} parsed" + (f", skipped: {skipped}" if skipped else ""),
             f"{report['confidence']:.0%} confidence intervals ({report['interval']})"]
    for name, p in report["pipelines"].items():
        pr = p["rows"]
        sk = ", ".join(f"{k} {v}" for k, v in pr["skipped"].items())
        lines += ["", f"pipeline {name}: {pr['evaluated']} rows evaluated, {pr['with_propensity']} with a propensity"
                  + (f"; skipped: {sk}" if sk else "") + f"; learners learn every {p['learn_every']} rows",
                  f"  logged policy (mean reward): {_cell(p['logged_policy'])}"]
        head = ("policy", "role", "IPS", "SNIPS", "DR", "ESS", "direct method (biased)")
        body = []
        for pname, q in p["policies"].items():
            ess = f"{q['ess']:.0f}" if q.get("ess") is not None else "—"
            body.append((pname, q["role"] + (" (failed)" if q["status"] == "error" else ""), _cell(q["ips"]),
                         _cell(q["snips"]), _cell(q["dr"]), ess, _cell(q["direct_method"])))
        widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
        for r in (head, *body):
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        lines += [f"  warning: {w}" for w in p["warnings"]]
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the TOML config whose bandit pipelines' learners (and shadow "
                   "learners) are evaluated")
    p.add_argument("--logs", required=True, help="logged decisions: JSON lines (.gz too; '-' for stdin) or Parquet "
                   "(.parquet, needs pyarrow)")
    p.add_argument("--pipeline", default=None, help="evaluate this pipeline only (default: every bandit pipeline)")
    p.add_argument("--map", default=None, dest="mapping", metavar="FIELD=COLUMN,...",
                   help="where the fields are in a row (defaults: " + _mapping_text(Mapping()) + "); a column may "
                   "be a dotted path (meta.p); context=a+b+c joins columns, context=* takes every other column")
    p.add_argument("--format", default=None, choices=("jsonl", "parquet"), help="the logs' format (default: from "
                   "the file name)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--learn-every", type=int, default=None, help="rows per learning block (default: the "
                   "pipeline's learn_every_events; 1 learns before every row)")
    p.add_argument("--out", default=None, help="write the JSON report to this file")


def cmd(args: argparse.Namespace) -> int:
    """Prints the table (and writes the JSON report with --out); 1 when the logs cannot be read."""
    if not 0.0 < args.confidence < 1.0:
        raise ConfigError(f"--confidence: {args.confidence!r} is not allowed; allowed: a number in (0, 1)")
    if args.learn_every is not None and args.learn_every < 1:
        raise ConfigError(f"--learn-every: {args.learn_every!r} is not allowed; allowed: >= 1")
    cfg = config.load(args.config, topics=False)  # an evaluation reads a log file, no Kafka topic
    try:
        report = evaluate(cfg, args.logs, pipeline=args.pipeline, mapping=args.mapping, confidence=args.confidence,
                          fmt=args.format, learn_every=args.learn_every)
    except OSError as e:
        print(f"eddy: cannot read {args.logs!r}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # (pyarrow's errors on a file that is not Parquet)
        if type(e).__module__.startswith("pyarrow"):
            print(f"eddy: cannot read {args.logs!r} as Parquet: {e}", file=sys.stderr)
            return 1
        raise
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return 0


__all__ = ["REASONS", "add_arguments", "cmd", "evaluate", "table"]

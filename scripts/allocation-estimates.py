#!/usr/bin/env python3
"""How well a cheap sensitivity table allocates bits, judged by a fully measured one (docs/mixed.md).

    python scripts/allocation-estimates.py FULL.json FAST.json [--budgets 2.5,3,3.5,4,4.5]

FULL.json: `qforge allocate --json` with the KL of every (block, candidate) measured on all
calibration tokens (--loss kl --kl-tokens 0). FAST.json: the same candidates with a cheaper
measure (--kl-tokens N, --anchor S). For each estimate the FAST table holds (its `kl`, and its
`anchored` column), prints Spearman's rho against FULL's KL per candidate across blocks, and per
budget the summed FULL KL of the allocation that minimises the estimate, next to the optimum (the
allocation that minimises FULL's KL). Exact dynamic programming over bytes, as `qforge allocate`.
Needs numpy (the venv of scripts/fetch-models.sh has it).
"""
import argparse
import json
import math

import numpy as np


def load(path):
    with open(path) as f:
        d = json.load(f)
    blocks = d["blocks"]
    k = len(blocks[0]["candidates"])
    col = lambda key: np.array([[math.nan if c.get(key) is None else c[key] for c in b["candidates"]] for b in blocks], dtype=float)
    a = d["allocations"][0]
    return {"schemes": [c["scheme"] for c in blocks[0]["candidates"]], "kl": col("kl"), "anchored": col("anchored"),
            "bytes": col("bytes").astype(np.int64), "params": 8 * a["budget_bytes"] / a["target_bpw"], "k": k,
            "kl_tokens": d.get("kl_tokens"), "anchor": d.get("anchor"), "seconds": d.get("seconds")}


def ranks(a):
    order = np.argsort(a, kind="stable")
    r = np.empty(len(a))
    r[order] = np.arange(len(a))
    return r


def rho(a, b):
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def allocate(bytes_, loss, budget):
    """The choice per block minimising the summed loss with total bytes <= budget (exact DP)."""
    g = int(np.gcd.reduce(bytes_.ravel()))
    w = bytes_ // g
    cap = int(budget // g)
    inf = math.inf
    best = np.full(cap + 1, inf)
    best[0] = 0.0
    picks = []
    for l in range(bytes_.shape[0]):
        nxt = np.full(cap + 1, inf)
        pick = np.zeros(cap + 1, dtype=int)
        for c in range(bytes_.shape[1]):
            s = np.full(cap + 1, inf)
            s[w[l, c]:] = best[: cap + 1 - w[l, c]] + loss[l, c]
            better = s < nxt
            nxt[better] = s[better]
            pick[better] = c
        best = nxt
        picks.append(pick)
    j = int(np.argmin(best))
    if not math.isfinite(best[j]):
        return None
    choice = []
    for l in reversed(range(bytes_.shape[0])):
        c = picks[l][j]
        choice.append(c)
        j -= w[l, c]
    return choice[::-1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("full")
    p.add_argument("fast")
    p.add_argument("--budgets", default="2.5,3,3.5,4,4.5,5")
    a = p.parse_args()
    full, fast = load(a.full), load(a.fast)
    if full["schemes"] != fast["schemes"] or full["kl"].shape != fast["kl"].shape:
        raise SystemExit(f"{a.full} and {a.fast} hold different candidates or blocks")
    if np.isnan(full["kl"]).any():
        raise SystemExit(f"{a.full}: not every (block, candidate) KL was measured (run it with --loss kl)")
    rows = np.arange(full["kl"].shape[0])
    print(f"candidates: {', '.join(full['schemes'])}")
    print(f"fast table: kl_tokens {fast['kl_tokens']}, anchor {fast['anchor']}, seconds {fast['seconds']}")
    budgets = [float(b) for b in a.budgets.split(",")]
    print("| estimate | rho per candidate | " + " | ".join(f"{b:g} bpw" for b in budgets) + " |")
    print("|---|---|" + "---|" * len(budgets))
    optimum = {b: allocate(full["bytes"], full["kl"], b * full["params"] / 8) for b in budgets}
    line = "| full KL (optimum) | 1 | "
    line += " | ".join("-" if optimum[b] is None else f"{full['kl'][rows, optimum[b]].sum():.4f}" for b in budgets)
    print(line + " |")
    for name in ("kl", "anchored"):
        est = fast[name]
        if np.isnan(est).any():
            continue
        r = " ".join(f"{rho(est[:, c], full['kl'][:, c]):.2f}" for c in range(full["k"]))
        cells = []
        for b in budgets:
            choice = allocate(full["bytes"], est, b * full["params"] / 8)
            cells.append("-" if choice is None else f"{full['kl'][rows, choice].sum():.4f}")
        print(f"| {name} | {r} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Benchmark: a NUMERIC column with one distinct value per row, stored as a dictionary and without one
(engine.table value columns), side by side in one run.

    python bench/value_column_bench.py              # 1 M and 3 M rows: both kinds; 10 M, 20 M: values
    python bench/value_column_bench.py --rows 1e6 --kinds values dictionary

For each row count a CSV of that many random normal floats (written with ``repr``: every value distinct)
and a BINARY target correlated with them is made once (not timed) in ``--work``. Each (rows, kind) case then
runs in a fresh process, so its peak is its own: ``build_dataset`` (8 GB budget, so the dictionary kind does
not fail), ``compute_statistics``, ``FeatureBuilder.fit`` of ``["x", "quantile_bin(x,50)"]`` plus the
features of the first 200,000 rows. It prints seconds per phase, the process's peak RSS (``VmHWM``: it
includes the memory-mapped table's pages) and the peak anonymous memory during the build (``RssAnon``
sampled every 10 ms), and checks that both kinds give the same median, correlation and bin edges.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SCHEMA = {
    "dataFileContainsHeader": True,
    "targetAttributeName": "y",
    "attributes": [
        {"attributeName": "x", "attributeType": "NUMERIC"},
        {"attributeName": "y", "attributeType": "BINARY"},
    ],
}


def make_csv(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w") as fh:
        fh.write("x,y\n")
        for a in range(0, n, 1_000_000):
            x = rng.normal(size=min(1_000_000, n - a))
            y = (x + rng.normal(size=len(x)) > 0).astype(int)
            fh.write("".join(f"{v!r},{t}\n" for v, t in zip(x.tolist(), y.tolist(), strict=True)))


def _status(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return 0.0


def run_case(csv: Path, kind: str, out: Path) -> dict[str, object]:
    """One case, in this process (the parent runs each in a child)."""
    from amlflow.engine import table as table_mod
    from amlflow.engine.dataset import Source, build_dataset
    from amlflow.engine.recipe.features import FeatureBuilder
    from amlflow.engine.recipe.parser import parse_recipe
    from amlflow.engine.schema import parse_schema
    from amlflow.engine.stats import compute_statistics
    from amlflow.engine.table import EncodedTable

    if kind == "dictionary":
        table_mod.VALUE_COLUMN_MIN_VALUES = 10**12
    schema = parse_schema(json.dumps(SCHEMA))
    size = csv.stat().st_size

    def open_at(offset: int):  # type: ignore[no-untyped-def]
        fh = open(csv, "rb")  # noqa: SIM115 (the reader closes it)
        fh.seek(offset)
        return fh

    src = Source(csv.name, size, lambda: open(csv, "rb"), open_at)  # noqa: SIM115
    peak = [0.0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], _status("RssAnon"))
            time.sleep(0.01)

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    build_dataset([src], schema, None, out, memory_budget=8 << 30)
    t1 = time.perf_counter()
    time.sleep(0.05)
    build_anon = peak[0]
    table = EncodedTable.open(out)
    insights = compute_statistics(table, schema)
    t2 = time.perf_counter()
    recipe = parse_recipe(json.dumps({"outputs": ["x", "quantile_bin(x,50)"]}), schema)
    fb = FeatureBuilder.fit(recipe, schema, table)
    fb.transform(table, 0, min(table.n_rows, 200_000))
    t3 = time.perf_counter()
    x = insights["attributes"][0]
    (edges,) = (v["edges"] for v in fb.state.values() if "edges" in v)
    return {
        "kind": table.kind("x"),
        "csv_mb": size / 2**20,
        "build_s": t1 - t0,
        "stats_s": t2 - t1,
        "fit_s": t3 - t2,
        "peak_mb": _status("VmHWM"),
        "anon_build_mb": build_anon,
        "median": x["median"],
        "mean": x["mean"],
        "correlation": x["correlation"],
        "edges": edges,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=float, nargs="+", default=[1e6, 3e6, 1e7, 2e7])
    ap.add_argument("--kinds", nargs="+", default=["values", "dictionary"])
    ap.add_argument("--dictionary-max-rows", type=float, default=3e6, help="skip the dictionary kind above")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # csv kind out: run one case, print JSON
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(Path(args.case[0]), args.case[1], Path(args.case[2]))))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="value-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{'rows':>12} {'CSV MB':>7} {'kind':>10} {'build s':>8} {'stats s':>8} {'fit s':>6} "
          f"{'peak RSS MB':>11} {'anon build MB':>13}")  # fmt: skip
    for n in (int(r) for r in args.rows):
        csv = work / f"x{n}.csv"
        if not csv.exists():
            make_csv(csv, n)
        got = {}
        for kind in args.kinds:
            if kind == "dictionary" and n > args.dictionary_max_rows:
                continue
            out = work / f"t-{kind}-{n}"
            cmd = [sys.executable, __file__, "--case", str(csv), kind, str(out)]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            got[kind] = r
            print(f"{n:>12,} {r['csv_mb']:>7.1f} {r['kind']:>10} {r['build_s']:>8.2f} {r['stats_s']:>8.2f} "
                  f"{r['fit_s']:>6.2f} {r['peak_mb']:>11,.0f} {r['anon_build_mb']:>13,.0f}")  # fmt: skip
        if len(got) == 2:
            a, b = got["values"], got["dictionary"]
            same = all(a[k] == b[k] for k in ("median", "correlation", "edges"))
            print(f"{'':>12} same median, correlation and {len(a['edges'])} edges: {same}; "
                  f"mean {a['mean']!r} / {b['mean']!r}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Run every bench/bench_*.py in turn (python -m bench [NAME ...]), each with its default options
(bench_latency, bench_load, ...: run one as ``python -m bench.NAME --help`` for its options)."""
import importlib
import pkgutil
import sys

import bench

names = sys.argv[1:] or sorted(m.name for m in pkgutil.iter_modules(bench.__path__)
                               if m.name.startswith("bench_"))
sys.argv = sys.argv[:1]  # the benchmarks' own option parsers see no names
for name in names:
    print(f"== {name}", flush=True)
    module = importlib.import_module(f"bench.{name}")
    module.main()

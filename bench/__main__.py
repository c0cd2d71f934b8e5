"""Run every bench/bench_*.py in turn (python -m bench [NAME ...])."""
import importlib
import pkgutil
import sys

import bench

names = sys.argv[1:] or sorted(m.name for m in pkgutil.iter_modules(bench.__path__)
                               if m.name.startswith("bench_"))
for name in names:
    print(f"== {name}", flush=True)
    module = importlib.import_module(f"bench.{name}")
    module.main()

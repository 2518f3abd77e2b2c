"""``python -m robot_rl.bench SUITE --out FILE.json [overrides]``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from robot_rl.bench import SUITES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robot_rl.bench")
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--out", required=True, help="JSON file to write the figures to")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to the suite")
    args = parser.parse_intermixed_args(argv)  # overrides may follow --out
    module = importlib.import_module(SUITES[args.suite])
    start = time.perf_counter()
    figures = module.run(args.overrides)
    figures.update(
        cores=os.cpu_count(),
        machine=platform.machine(),
        python=platform.python_version(),
        bench_wall_s=time.perf_counter() - start,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".partial")
    tmp.write_text(json.dumps(figures, indent=2, default=str))
    tmp.replace(out)
    print(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

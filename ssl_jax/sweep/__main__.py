"""python -m ssl_jax.sweep status DIR [--tables]: one row per point of the sweep in DIR
(pending / running / done / stopped / failed, its step, the selection metric, attempts, job
id); --tables also rebuilds sweep.csv / sweep.md / sweep.png from the points that ended."""
from __future__ import annotations

import argparse
import sys

from ssl_jax.sweep import state


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl_jax.sweep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="where each point of a sweep is")
    status.add_argument("workdir", help="the sweep's --workdir")
    status.add_argument("--tables", action="store_true",
                        help="rebuild sweep.csv / sweep.md / sweep.png first")
    args = parser.parse_args(argv)
    try:
        if args.tables:
            state.rebuild_tables(args.workdir)
        print(state.format_status(state.status_rows(args.workdir)))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

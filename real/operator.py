"""Operator tools: ``python -m real.operator COMMAND`` against a running daemon.

::

    python -m real.operator status            # state, episode, policy, loop and safety figures
    python -m real.operator watch             # the same, refreshed every second
    python -m real.operator metrics           # Prometheus text
    python -m real.operator start [--seed 3]  # start an episode
    python -m real.operator stop [--success | --failure]
    python -m real.operator label --success|--failure
    python -m real.operator estop | clear
    python -m real.operator policy runs/push_dsrl/policy
    python -m real.operator intervene on|off

``--url`` (default http://127.0.0.1:8765) and ``--token`` (or ROBOT_RL_TOKEN) reach another one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from real.client import DaemonClient


def _summary(status: dict) -> str:
    m = status["metrics"]
    ep = status["episode"]
    where = "idle" if ep is None else f"#{ep['index']} step {ep['steps']}"
    lines = [
        f"connected {status['connected']}  stopped {status['stopped']}  "
        f"intervention {status['intervention']}",
        f"policy    {status['policy']}"
        + (f"  ERROR {status['policy_error']}" if status["policy_error"] else ""),
        f"episode   {where}  recorded {status['episodes_recorded']}  last {status['last_episode']}",
        f"loop      p50 {_ms(m['period_p50_ms'])}  p99 {_ms(m['period_p99_ms'])}  "
        f"(target {_ms(m['target_period_ms'])})  missed {m['missed_deadlines']}",
        f"inference p50 {_ms(m['inference_p50_ms'])}  p99 {_ms(m['inference_p99_ms'])}  "
        f"starved ticks {m['starved_ticks']}  stale actions dropped {m['stale_actions_dropped']}",
        f"safety    {m['safety_events'] or 'no events'}",
    ]
    return "\n".join(lines)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m real.operator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--token", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("status", "watch", "metrics", "estop", "clear"):
        sub.add_parser(name)
    start = sub.add_parser("start")
    start.add_argument("--seed", type=int, default=None)
    for name in ("stop", "label"):
        p = sub.add_parser(name)
        group = p.add_mutually_exclusive_group(required=name == "label")
        group.add_argument("--success", dest="success", action="store_true", default=None)
        group.add_argument("--failure", dest="success", action="store_false")
    sub.add_parser("policy").add_argument("path")
    sub.add_parser("intervene").add_argument("on", choices=["on", "off"])
    args = parser.parse_args(argv)
    client = DaemonClient(args.url, args.token)
    try:
        if args.command == "status":
            print(_summary(client.status()))
        elif args.command == "watch":
            while True:
                print("\033[2J\033[H" + _summary(client.status()), flush=True)
                time.sleep(1.0)
        elif args.command == "metrics":
            print(client.metrics(), end="")
        else:
            actions = {
                "start": lambda: client.start_episode(args.seed),
                "stop": lambda: client.stop_episode(args.success),
                "label": lambda: client.label(args.success),
                "estop": client.estop,
                "clear": client.clear_estop,
                "policy": lambda: client.load_policy(args.path),
                "intervene": lambda: client.intervention(on=args.on == "on"),
            }
            print(json.dumps(actions[args.command](), indent=2))
    except (RuntimeError, OSError) as err:
        print(f"operator: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

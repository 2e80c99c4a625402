"""labctl: the nspawn lab's command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import topology
from .errors import LabError
from .nodes import Lab, ssh_command


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labctl", description="halab's lab of systemd-nspawn nodes (see topology.yml)")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    sub.add_parser("up", help="build the image if needed, boot every node, write the inventory")
    sub.add_parser("down", help="stop every node and leave the host as it was before `up`")
    st = sub.add_parser("status", help="each node's state and systemd state")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    ssh = sub.add_parser("ssh", help="a shell or a command on a node")
    ssh.add_argument("node")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    stop = sub.add_parser("stop", help="node loss: power a node off")
    stop.add_argument("node")
    stop.add_argument("--now", action="store_true", help="pull the plug (SIGKILL) instead of a clean poweroff")
    for verb, text in (
        ("start", "boot a stopped node again (its disk is kept)"),
        ("reboot", "power a node off and boot it again"),
        ("partition", "cut a node off the network (it keeps running)"),
        ("heal", "put a partitioned node back on the network"),
    ):
        sub.add_parser(verb, help=text).add_argument("node")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        topo = topology.load()
        lab = Lab(topo, log=lambda msg: print(f"labctl: {msg}", flush=True))
        if args.verb == "up":
            lab.up()
        elif args.verb == "down":
            lab.down()
        elif args.verb == "status":
            rows = lab.status()
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                fmt = "{node:<6} {address:<15} {groups:<11} {state:<12} {systemd}"
                print(fmt.format(node="NODE", address="ADDRESS", groups="GROUPS", state="STATE", systemd="SYSTEMD"))
                for row in rows:
                    print(fmt.format(**row))
        elif args.verb == "ssh":
            lab.require_up()
            node = topo.node(args.node)
            cmd = ssh_command(node.address, args.command, tty=sys.stdin.isatty() and not args.command)
            os.execvp(cmd[0], cmd)
        elif args.verb == "stop":
            lab.stop(args.node, now=args.now)
        elif args.verb == "start":
            lab.start(args.node)
        elif args.verb == "reboot":
            lab.reboot(args.node)
        elif args.verb in ("partition", "heal"):
            lab.partition(args.node, cut=args.verb == "partition")
    except (LabError, KeyError) as exc:
        print(f"labctl: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0

"""labctl: the nspawn lab's command line."""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from . import topology
from .errors import LabError, die
from .lab import Lab
from .ssh import ssh_command


class Verb(enum.Enum):
    up = "up"
    down = "down"
    status = "status"
    ssh = "ssh"
    console = "console"
    stop = "stop"
    start = "start"
    reboot = "reboot"
    partition = "partition"
    heal = "heal"

    @property
    def help(self) -> str:
        return HELP[self]

    @property
    def takes_node(self) -> bool:
        return self not in (Verb.up, Verb.down, Verb.status)


HELP = {
    Verb.up: "build the image if needed, boot every node, write the inventory",
    Verb.down: "stop every node and leave the host as it was before `up`",
    Verb.status: "each node's state and systemd state",
    Verb.ssh: "a shell or a command on a node",
    Verb.console: "a shell or a command on a node without its network (reaches a partitioned node)",
    Verb.stop: "node loss: power a node off",
    Verb.start: "boot a stopped node again (its disk is kept)",
    Verb.reboot: "power a node off and boot it again",
    Verb.partition: "cut a node off the network (it keeps running)",
    Verb.heal: "put a partitioned node back on the network",
}


@dataclass(frozen=True)
class Args:
    verb: Verb
    node: str = ""
    command: list[str] = field(default_factory=list)
    now: bool = False  # stop: SIGKILL instead of a clean poweroff
    json: bool = False  # status: machine-readable


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labctl", description="halab's lab of systemd-nspawn nodes (see topology.yml)")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in Verb:
        v = sub.add_parser(verb.value, help=verb.help)
        if verb.takes_node:
            v.add_argument("node")
        if verb is Verb.status:
            v.add_argument("--json", action="store_true", help="machine-readable output")
        elif verb in (Verb.ssh, Verb.console):
            v.add_argument("command", nargs=argparse.REMAINDER)
        elif verb is Verb.stop:
            v.add_argument("--now", action="store_true", help="pull the plug (SIGKILL) instead of a clean poweroff")
    return p


def parse(argv: list[str] | None = None) -> Args:
    ns = parser().parse_args(argv)
    return Args(
        verb=Verb(ns.verb),
        node=getattr(ns, "node", ""),
        command=list(getattr(ns, "command", None) or []),
        now=getattr(ns, "now", False),
        json=getattr(ns, "json", False),
    )


# ---------------------------------------------------------------- the verbs


def show_status(lab: Lab, args: Args) -> None:
    rows = [asdict(row) for row in lab.status()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    fmt = "{node:<6} {address:<15} {groups:<11} {state:<12} {systemd}"
    print(fmt.format(node="NODE", address="ADDRESS", groups="GROUPS", state="STATE", systemd="SYSTEMD"))
    for row in rows:
        print(fmt.format(**row))


def ssh(lab: Lab, args: Args) -> None:
    lab.require_up()
    node = lab.topo.node(args.node)
    if lab.is_partitioned(args.node):
        die(
            f"{args.node} is partitioned (its network is cut): SSH cannot reach it",
            hint=f"lab/labctl heal {args.node} puts it back; lab/labctl console {args.node} -- CMD reaches it meanwhile",
        )
    cmd = ssh_command(node.address, args.command, tty=sys.stdin.isatty() and not args.command)
    os.execvp(cmd[0], cmd)


def console(lab: Lab, args: Args) -> None:
    cmd = lab.console(args.node, args.command or ["bash", "-l"])
    os.execvp(cmd[0], cmd)


VERBS: dict[Verb, Callable[[Lab, Args], None]] = {
    Verb.up: lambda lab, _: lab.up(),
    Verb.down: lambda lab, _: lab.down(),
    Verb.status: show_status,
    Verb.ssh: ssh,
    Verb.console: console,
    Verb.stop: lambda lab, a: lab.stop(a.node, now=a.now),
    Verb.start: lambda lab, a: lab.start(a.node),
    Verb.reboot: lambda lab, a: lab.reboot(a.node),
    Verb.partition: lambda lab, a: lab.partition(a.node, cut=True),
    Verb.heal: lambda lab, a: lab.partition(a.node, cut=False),
}


def main(argv: list[str] | None = None) -> int:
    if not (sys.argv[1:] if argv is None else argv):  # no verb: the list of verbs, not argparse's one-line error
        parser().print_help(sys.stderr)
        return 2
    args = parse(argv)
    try:
        lab = Lab(topology.load(), log=lambda msg: print(f"labctl: {msg}", flush=True))
        VERBS[args.verb](lab, args)
    except LabError as exc:
        print(f"labctl: {exc}", file=sys.stderr)
        return 1
    except KeyError as exc:  # an unknown node: topology's message names the known ones
        print(f"labctl: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0

"""labctl's verbs: one table, the same flags and output as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import cli, node
from lab.cli import VERBS, Args, Verb
from lab.errors import LabError, die
from lab.lab import StatusRow
from lab.topology import load


def test_every_verb_has_a_handler_and_a_subcommand() -> None:
    assert set(VERBS) == set(Verb)
    assert [v.value for v in Verb] == [
        "up", "down", "status", "ssh", "console", "stop", "start", "reboot", "partition", "heal",
    ]  # fmt: skip
    sub = next(a for a in cli.parser()._actions if a.dest == "verb")
    assert list(sub.choices) == [v.value for v in Verb]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["up"], Args(Verb.up)),
        (["status", "--json"], Args(Verb.status, json=True)),
        (["stop", "mon"], Args(Verb.stop, node="mon")),
        (["stop", "mon", "--now"], Args(Verb.stop, node="mon", now=True)),
        (["ssh", "app1", "--", "systemctl", "status"], Args(Verb.ssh, node="app1", command=["systemctl", "status"])),
        (["ssh", "app1"], Args(Verb.ssh, node="app1")),
        (["console", "app1", "--", "hostname"], Args(Verb.console, node="app1", command=["hostname"])),
        (["heal", "lb"], Args(Verb.heal, node="lb")),
    ],
)
def test_parse(argv: list[str], expected: Args) -> None:
    assert cli.parse(argv) == expected


def test_no_verb_prints_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert all(v.value in err for v in Verb) and "partitioned node" in err


def test_node_verbs_need_a_node() -> None:
    for verb in Verb:
        if verb.takes_node:
            with pytest.raises(SystemExit):
                cli.parse([verb.value])


class FakeLab:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.topo = load()

    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: self.calls.append((name, (*args, *sorted(kwargs.items()))))

    def status(self) -> list[StatusRow]:
        return [
            StatusRow("lb", "198.51.100.10", "loadbalancer", "running", "running"),
            StatusRow("mon", "198.51.100.14", "monitoring", "stopped", "-"),
        ]


@pytest.mark.parametrize(
    ("argv", "call"),
    [
        (["up"], ("up", ())),
        (["down"], ("down", ())),
        (["stop", "mon", "--now"], ("stop", ("mon", ("now", True)))),
        (["stop", "mon"], ("stop", ("mon", ("now", False)))),
        (["start", "mon"], ("start", ("mon",))),
        (["reboot", "mon"], ("reboot", ("mon",))),
        (["partition", "mon"], ("partition", ("mon", ("cut", True)))),
        (["heal", "mon"], ("partition", ("mon", ("cut", False)))),
    ],
)
def test_the_table_calls_the_lab(argv: list[str], call: tuple[str, tuple[object, ...]]) -> None:
    lab = FakeLab()
    args = cli.parse(argv)
    VERBS[args.verb](lab, args)  # type: ignore[arg-type]
    assert lab.calls == [call]


def test_status_table_and_json_are_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    lab = FakeLab()
    cli.show_status(lab, Args(Verb.status))  # type: ignore[arg-type]
    assert capsys.readouterr().out.splitlines() == [
        "NODE   ADDRESS         GROUPS      STATE        SYSTEMD",
        "lb     198.51.100.10   loadbalancer running      running",
        "mon    198.51.100.14   monitoring  stopped      -",
    ]
    cli.show_status(lab, Args(Verb.status, json=True))  # type: ignore[arg-type]
    rows = json.loads(capsys.readouterr().out)
    assert rows[1] == {"node": "mon", "address": "198.51.100.14", "groups": "monitoring", "state": "stopped", "systemd": "-"}
    assert list(rows[0]) == ["node", "address", "groups", "state", "systemd"]


def test_a_lab_error_prints_its_message_and_hint(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(lab: object, args: Args) -> None:
        die("mon did not stop within 30 s: ...", hint="run the command again")

    monkeypatch.setitem(VERBS, Verb.stop, fail)
    assert cli.main(["stop", "mon", "--now"]) == 1
    assert capsys.readouterr().err == "labctl: mon did not stop within 30 s: ...\n  run the command again\n"
    assert str(LabError("plain")) == "plain"


def test_nspawn_arguments(tmp_path: Path) -> None:
    mon = load().node("mon")
    args = node.nspawn_args(mon, tmp_path, "halab0")
    assert args[0] == "systemd-nspawn" and args[-1] == "/usr/local/sbin/halab-init"
    expected = {f"--directory={tmp_path}", "--machine=halab-mon", "--network-bridge=halab0", "--register=no", "--keep-unit"}
    assert expected <= set(args)
    assert "--boot" not in args  # the init shim is PID 1 (see lab/image.py)


def test_node_identity_files() -> None:
    topo = load()
    app1 = topo.node("app1")
    hosts = node.hosts_file(app1, topo)
    assert "127.0.1.1 app1.halab.test app1" in hosts and app1.address not in hosts
    assert f"{topo.node('lb1').address} lb1.halab.test lb1" in hosts
    expected = f"address {app1.address}/{topo.prefixlen}\n    gateway {topo.gateway}\n"
    assert expected in node.interfaces_file(app1, topo)

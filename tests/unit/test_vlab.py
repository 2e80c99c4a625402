"""vagrant/vlab's pure parts: its command line, the commands it builds, and the host helpers it shares with labctl."""

from __future__ import annotations

import ipaddress
import subprocess
import time
from pathlib import Path

import pytest

from lab import host, lab, topology
from lab.errors import LabError
from vagrant import build_box, vlab
from vagrant.vlab import VERBS, Args, Verb

REPO = Path(__file__).resolve().parents[2]
NS = vlab.NS
UP = vlab.UPLINK


# ---------------------------------------------------------------- command line


def test_every_verb_has_a_handler_and_a_subcommand() -> None:
    assert set(VERBS) == set(Verb)
    # The shell vlab's verbs (vagrant.mk and .ci/run call them), plus `net`.
    assert [v.value for v in Verb] == [
        "deps", "plumbing", "net", "box", "up", "provision", "vagrant", "exec", "status", "down",
    ]  # fmt: skip
    sub = next(a for a in vlab.parser()._actions if a.dest == "verb")
    assert list(sub.choices) == [v.value for v in Verb]  # type: ignore[arg-type]
    assert all(verb.help for verb in Verb)


def test_vagrant_mk_calls_only_known_verbs() -> None:
    text = (REPO / "vagrant/vagrant.mk").read_text()
    called = {line.split("$(VLAB)")[1].split()[0] for line in text.splitlines() if "$(VLAB) " in line}
    assert called == {"deps", "box", "up", "down", "exec"}
    assert called <= {v.value for v in Verb}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status"], Args(Verb.status)),
        (["down"], Args(Verb.down)),
        (["up"], Args(Verb.up)),
        (["up", "app1", "lb"], Args(Verb.up, ["app1", "lb"])),
        (["up", "--parallel", "app1"], Args(Verb.up, ["--parallel", "app1"])),
        (["vagrant", "ssh", "app1", "--", "-t"], Args(Verb.vagrant, ["ssh", "app1", "--", "-t"])),
        (["vagrant", "--", "--help"], Args(Verb.vagrant, ["--", "--help"])),
        (["exec"], Args(Verb.exec)),
        (
            ["exec", "env", "ANSIBLE_SSH_EXTRA_ARGS=-o A=b", ".venv/bin/pytest", "-q", "-m", "not idempotence"],
            Args(Verb.exec, ["env", "ANSIBLE_SSH_EXTRA_ARGS=-o A=b", ".venv/bin/pytest", "-q", "-m", "not idempotence"]),
        ),
        (["exec", "ls", "--help"], Args(Verb.exec, ["ls", "--help"])),
    ],
)
def test_parse(argv: list[str], expected: Args) -> None:
    assert vlab.parse(argv) == expected


@pytest.mark.parametrize("argv", [["--help"], ["status", "--help"], ["up", "--help"], ["exec", "-h"], ["vagrant", "--help"]])
def test_help_is_vlabs_own(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        vlab.parse(argv)
    assert exit_.value.code == 0
    assert "usage: vagrant/vlab" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["bogus"], ["status", "extra"], ["down", "--now"]])
def test_a_bad_command_line_exits_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        vlab.parse(argv)
    assert exit_.value.code == 2


def test_not_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.chdir(REPO)  # main() changes both, like the shell vlab did
    monkeypatch.setenv("VAGRANT_HOME", "unset")
    for verb in ("deps", "plumbing", "net", "box", "up", "provision", "down", "vagrant", "exec"):
        assert vlab.main([verb]) == 1
        err = capsys.readouterr().err
        assert err.startswith("vlab: error: run as root") and "Traceback" not in err


def test_a_failed_command_is_vlabs_exit_status(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(_: Args) -> None:
        raise vlab.Exit(7)

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("VAGRANT_HOME", "unset")
    monkeypatch.setitem(VERBS, Verb.status, fails)
    assert vlab.main(["status"]) == 7
    assert vlab.status_of(-15) == 143  # killed by SIGTERM, as a shell says it
    assert vlab.status_of(100) == 100


# ---------------------------------------------------------------- what vlab runs


def test_commands_run_in_the_namespace_with_the_labs_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(vlab, "model_file", lambda repo=None: tmp_path / "absent.yml")
    cmd = vlab.in_lab(["vagrant", "up", "--provider=libvirt"], {"PATH": "/usr/bin:/bin"})
    assert cmd[:5] == ["ip", "netns", "exec", NS, "env"]
    assert cmd[-3:] == ["vagrant", "up", "--provider=libvirt"]
    assert cmd[5:-3] == [
        f"VAGRANT_HOME={vlab.VAGRANT_HOME}",
        f"HALAB_BOX={build_box.BOX_NAME}",
        "HALAB_LIBVIRT_DRIVER=qemu",
        "VAGRANT_DEFAULT_PROVIDER=libvirt",
        "HALAB_VAGRANT=1",
        f"ANSIBLE_CONFIG={REPO}/ansible.cfg",
        "ANSIBLE_STRATEGY=mitogen_linear",
        f"PATH={REPO}/.venv/bin:/usr/bin:/bin",
    ]


@pytest.mark.parametrize(("given", "used"), [(None, "mitogen_linear"), ("", "mitogen_linear"), ("linear", "linear")])
def test_ansible_strategy_can_be_overridden(given: str | None, used: str) -> None:
    environ = {} if given is None else {"ANSIBLE_STRATEGY": given}
    assert vlab.lab_env(environ)["ANSIBLE_STRATEGY"] == used


@pytest.fixture
def clone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A repository of vlab's in tmp_path: its .vagrant/ there, topology.yml the real one."""
    monkeypatch.setattr(vlab, "REPO_ROOT", tmp_path)
    return tmp_path


def test_up_makes_five_vms_of_the_compact_placement_by_default(clone: Path) -> None:
    vlab.place_nodes({})
    model = topology.load(vlab.model_file())
    assert [n.name for n in model.nodes] == ["lb1", "lb2", "app1", "app2", "mon"]
    assert vlab.lab_model() == vlab.model_file()
    assert vlab.lab_env({}, clone)["HALAB_TOPOLOGY"] == str(clone / ".vagrant/halab-topology.yml")
    files = vlab.host_vars(model)
    assert sorted(files) == sorted(n.name for n in model.nodes)


def test_all_nodes_on_request_means_the_model_itself(clone: Path) -> None:
    vlab.place_nodes({})
    vlab.place_nodes({vlab.PLACEMENT_VARIABLE: "all"})
    assert not vlab.model_file().exists()
    assert vlab.lab_model() == topology.TOPOLOGY_FILE
    assert "HALAB_TOPOLOGY" not in vlab.lab_env({}, clone)


def test_the_placement_is_not_changed_under_existing_vms(clone: Path) -> None:
    vlab.place_nodes({})
    (clone / ".vagrant/machines/app1/libvirt").mkdir(parents=True)
    (clone / ".vagrant/machines/app1/libvirt/id").write_text("0c2f\n")
    with pytest.raises(LabError, match="were made with HALAB_VAGRANT_NODES=compact"):
        vlab.place_nodes({vlab.PLACEMENT_VARIABLE: "all"})
    vlab.place_nodes({})  # the same placement again is fine
    with pytest.raises(LabError, match="expected one of compact, all"):
        vlab.place_nodes({vlab.PLACEMENT_VARIABLE: "three"})


def test_host_vars_name_both_controller_addresses() -> None:
    topo = topology.load()
    files = vlab.host_vars(topo)
    assert list(files) == [n.name for n in topo.nodes]
    text = files[topo.nodes[0].name]
    assert "ansible_become: true\n" in text
    assert "ansible_timeout: 600\n" in text
    assert "ansible_python_interpreter: /usr/bin/python3\n" in text
    assert f"common_firewall_controller_addresses: [{vlab.MGMT_GATEWAY}, {topo.gateway}]\n" in text


def test_write_host_vars(tmp_path: Path) -> None:
    vlab.write_host_vars(tmp_path / "host_vars")
    assert sorted(p.stem for p in (tmp_path / "host_vars").iterdir()) == sorted(n.name for n in topology.load().nodes)


def test_machine_states_are_the_lines_of_vagrant_status() -> None:
    out = """Current machine states:

lb                        running (libvirt)
app1                      shutoff (libvirt)

This environment represents multiple VMs. The VMs are all listed
above with their current state.
"""
    assert vlab.machine_states(out) == [
        "lb                        running (libvirt)",
        "app1                      shutoff (libvirt)",
    ]
    assert vlab.machine_states("") == []


def test_the_uplink_is_its_own_network() -> None:
    topo = topology.load()
    assert not UP.network.overlaps(topo.network)
    assert {ipaddress.IPv4Address(UP.host_ip), ipaddress.IPv4Address(UP.ns_ip)} == set(UP.network.hosts())
    assert all(len(name) <= 15 for name in (UP.host_if, UP.ns_if))


def test_nft_rulesets() -> None:
    rules = vlab.host_ruleset()
    assert rules.lstrip().startswith(f"table ip {vlab.NFT_TABLE} {{")
    assert f'ip saddr {UP.network} oifname != "{UP.host_if}" masquerade' in rules
    # NTP to the outside is dropped before the uplink's forward accept.
    assert rules.index(f'iifname "{UP.host_if}" udp dport 123 drop') < rules.index(f'iifname "{UP.host_if}" accept')
    inside = vlab.namespace_ruleset()
    assert f'oifname "{UP.ns_if}" masquerade' in inside and "forward" not in inside


def test_vlab_knows_the_nspawn_lab_only_by_import() -> None:
    """Its table is not the nspawn lab's, and the nspawn bridge's name is not typed in vagrant/."""
    assert vlab.NFT_TABLE != host.NFT_TABLE
    for path in (REPO / "vagrant/vlab", REPO / "vagrant/vlab.py"):
        assert lab.BRIDGE not in path.read_text()
    assert vlab.POOL_VOLUMES.startswith(build_box.BOX_NAME.replace("/", "-VAGRANTSLASH-"))


# ---------------------------------------------------------------- the plumbing, command by command


class Recorder:
    """Stands in for lab.run.run: records each command (and its stdin), answers from a table."""

    def __init__(self, answers: dict[str, tuple[int, str]] | None = None) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.answers = answers or {}

    def __call__(
        self, cmd: list[str], check: bool = True, input_text: str | None = None, **_: object
    ) -> subprocess.CompletedProcess[str]:
        line = " ".join(cmd)
        self.calls.append((line, input_text))
        code, out = self.answers.get(line, (0, ""))
        return subprocess.CompletedProcess(cmd, code, out, "")

    @property
    def commands(self) -> list[str]:
        return [line for line, _ in self.calls]


@pytest.fixture
def fake_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """ip_forward, vlab's state directory and /run, in tmp_path."""
    forward = tmp_path / "ip_forward"
    forward.write_text("0\n")
    monkeypatch.setattr(host, "IP_FORWARD", forward)
    monkeypatch.setattr(vlab, "STATE", tmp_path / "state")
    monkeypatch.setattr(vlab, "IP_FORWARD_SAVED", tmp_path / "state/ip_forward.orig")
    monkeypatch.setattr(vlab, "RUN_DIR", tmp_path / "run")
    monkeypatch.setattr(vlab, "REPO_ROOT", tmp_path / "repo")
    return tmp_path


def test_network_runs_what_the_shell_vlab_ran(monkeypatch: pytest.MonkeyPatch, fake_host: Path) -> None:
    rec = Recorder({f"ip link show dev {UP.host_if}": (1, "")})
    monkeypatch.setattr(host, "run", rec)
    monkeypatch.setattr(vlab, "run", rec)
    vlab.network()
    in_ns = f"ip netns exec {NS}"
    assert rec.commands == [
        "ip netns list",
        f"ip netns add {NS}",
        f"{in_ns} ip link set lo up",
        f"ip link show dev {UP.host_if}",
        f"ip link add {UP.host_if} type veth peer name {UP.ns_if} netns {NS}",
        f"ip addr replace {UP.host_ip}/30 dev {UP.host_if}",
        f"ip link set {UP.host_if} up",
        f"{in_ns} ip addr replace {UP.ns_ip}/30 dev {UP.ns_if}",
        f"{in_ns} ip link set {UP.ns_if} up",
        f"{in_ns} ip route replace default via {UP.host_ip}",
        f"{in_ns} sysctl -qw net.ipv4.ip_forward=1",
        f"{in_ns} nft -f -",
        "nft -f -",
    ]
    table = vlab.NFT_TABLE
    replace = f"table ip {table}\ndelete table ip {table}\n"
    assert rec.calls[-2][1] == replace + vlab.namespace_ruleset()
    assert rec.calls[-1][1] == replace + vlab.host_ruleset()
    assert (fake_host / "ip_forward").read_text() == "1\n"
    assert (fake_host / "state/ip_forward.orig").read_text() == "0\n"  # the value before vlab


def test_network_is_idempotent(monkeypatch: pytest.MonkeyPatch, fake_host: Path) -> None:
    rec = Recorder({"ip netns list": (0, f"{NS} (id: 5)\n")})
    monkeypatch.setattr(host, "run", rec)
    monkeypatch.setattr(vlab, "run", rec)
    (fake_host / "state").mkdir()
    (fake_host / "state/ip_forward.orig").write_text("0\n")
    (fake_host / "ip_forward").write_text("1\n")  # set by the first run
    vlab.network()
    assert f"ip netns add {NS}" not in rec.commands
    assert not any(c.startswith(f"ip link add {UP.host_if}") for c in rec.commands)
    assert (fake_host / "state/ip_forward.orig").read_text() == "0\n"  # still the value before vlab


def test_down_without_libvirt_removes_the_network(monkeypatch: pytest.MonkeyPatch, fake_host: Path) -> None:
    rec = Recorder({"ip netns list": (0, f"{NS} (id: 5)\n"), f"ip link show dev {lab.BRIDGE}": (1, "")})
    monkeypatch.setattr(host, "run", rec)
    monkeypatch.setattr(vlab, "run", rec)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    (fake_host / "state").mkdir()
    (fake_host / "state/ip_forward.orig").write_text("0\n")
    (fake_host / "ip_forward").write_text("1\n")
    (fake_host / "run/libvirt").mkdir(parents=True)
    vlab.down(Args(Verb.down))
    assert rec.commands == [
        "ip netns list",
        f"ip netns pids {NS}",
        "ip netns list",
        f"ip netns delete {NS}",
        f"ip link show dev {UP.host_if}",
        f"ip link delete {UP.host_if}",
        f"nft list table ip {vlab.NFT_TABLE}",
        f"nft delete table ip {vlab.NFT_TABLE}",
        f"ip link show dev {lab.BRIDGE}",
    ]
    assert not (fake_host / "run/libvirt").exists()
    assert (fake_host / "ip_forward").read_text() == "0\n"
    assert not (fake_host / "state/ip_forward.orig").exists()


# ---------------------------------------------------------------- lab/host.py's shared helpers


def test_nspawn_nat_ruleset_is_unchanged() -> None:
    topo = topology.load()
    assert (
        host.nat_ruleset(topo, lab.BRIDGE)
        == f"""
table ip {host.NFT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {topo.network} oifname != "{lab.BRIDGE}" masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{lab.BRIDGE}" accept
        oifname "{lab.BRIDGE}" ct state established,related accept
    }}
}}
"""
    )


def test_nft_commands_in_a_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(host, "run", rec)
    host.delete_nft_table("t", netns="ns")
    host.delete_nft_table("u")
    assert rec.commands == [
        "ip netns exec ns nft list table ip t",
        "ip netns exec ns nft delete table ip t",
        "nft list table ip u",
        "nft delete table ip u",
    ]


@pytest.mark.parametrize(
    ("before", "bridge_up", "after", "keeper"),
    [("0", False, "0", None), ("0", True, "1", lab.BRIDGE), ("1", False, "1", None), ("1", True, "1", None)],
)
def test_ip_forward_is_put_back_unless_the_nspawn_lab_needs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, before: str, bridge_up: bool, after: str, keeper: str | None
) -> None:
    forward = tmp_path / "ip_forward"
    forward.write_text(before + "\n")
    monkeypatch.setattr(host, "IP_FORWARD", forward)
    monkeypatch.setattr(host, "link_exists", lambda name: bridge_up and name == lab.BRIDGE)
    saved = tmp_path / "saved"
    host.save_ip_forward(saved)
    host.write_ip_forward("1")
    host.save_ip_forward(saved)  # a second `up` keeps the first value
    assert saved.read_text() == before + "\n"
    assert host.restore_ip_forward(saved, needed_by=[lab.BRIDGE]) == keeper
    assert forward.read_text() == after + "\n"
    assert not saved.exists()
    assert host.restore_ip_forward(saved) is None  # nothing saved: nothing to do


def test_missing_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    status = "-f=${Status}\n"
    rec = Recorder({
        f"dpkg-query -W {status} ok": (0, "install ok installed\n"),
        f"dpkg-query -W {status} removed": (0, "deinstall ok config-files\n"),
        f"dpkg-query -W {status} unknown": (1, ""),
    })  # fmt: skip
    monkeypatch.setattr(host, "run", rec)
    assert host.missing_packages(["unknown", "ok", "removed"]) == ["unknown", "removed"]


@pytest.mark.parametrize("had_one", [False, True])
def test_services_held_back_while_installing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, had_one: bool) -> None:
    policy = tmp_path / "policy-rc.d"
    if had_one:
        policy.write_text("#!/bin/sh\nexit 0\n")
    monkeypatch.setattr(host, "POLICY_RC_D", policy)
    with host.services_held_back():
        assert policy.read_text() == "#!/bin/sh\nexit 101\n"
        assert policy.stat().st_mode & 0o111
    assert policy.exists() == had_one
    if had_one:
        assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_a_silent_command_with_no_domain_running_is_stopped_as_stalled() -> None:
    started = time.monotonic()
    cmd = ["sh", "-c", "echo booting; sleep 30"]
    assert vlab.passthrough_watched(cmd, stall_s=1, busy=lambda: False, poll_s=0.1) is None
    assert time.monotonic() - started < 10
    # silent but busy (a domain runs: a slow boot) is left alone; a failure keeps its status
    assert vlab.passthrough_watched(["sleep", "1.5"], stall_s=0.5, busy=lambda: True, poll_s=0.1) == 0
    assert vlab.passthrough_watched(["sh", "-c", "exit 3"], stall_s=5, busy=lambda: False, poll_s=0.1) == 3

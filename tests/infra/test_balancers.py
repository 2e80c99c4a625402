"""The load balancers and their floating addresses (roles/keepalived): keepalived runs on
each, exactly one holds each address, both serve the same NGINX configuration, each one's
state file and textfile metric agree with what it holds, and VRRP is accepted from the
peers only (and nowhere else).

Addresses come from the inventory (the `addr` fixture) and topology.yml (TOPO.floating),
paths from the model and the role's defaults; nothing is typed here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest
import testinfra
import yaml
from testinfra.host import Host

from tests.support.model import LOADBALANCER_GROUP, TOPO
from tests.support.run import REPO
from tests.support.wait import poll

testinfra_hosts = ["ansible://all"]

Addr = Callable[[str], str]
Group = Callable[[str], list[str]]

FLOATING = TOPO.floating_in(LOADBALANCER_GROUP)
STATE_FILE = TOPO.services.balancer_state_file
# The floating address whose state the notify hook writes to STATE_FILE (keepalived_state_floating).
STATE_FLOATING = "public"
STATES = {"MASTER", "BACKUP", "FAULT", "STOP"}
STATE_KEYS = {"node", "address", "floating", "floating_address", "state", "since"}
# Debian's node_exporter textfile directory (keepalived_textfile_directory).
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
NGINX_LB_DEFAULTS = yaml.safe_load((REPO / "roles/nginx_lb/defaults/main.yml").read_text())
VRRP_RULE = re.compile(r"meta l4proto (?:112|vrrp) ip saddr (\{[^}]*\}|\S+) accept")

pytestmark = pytest.mark.skipif(not FLOATING, reason="topology.yml has no floating address for the load balancers")


def name_of(host: Host) -> str:
    return str(host.ansible.get_variables()["inventory_hostname"])


def is_balancer(host: Host) -> bool:
    return LOADBALANCER_GROUP in host.ansible.get_variables()["group_names"]


def holds(host: Host, address: str) -> bool:
    return bool(host.check_output(f"ip -o -4 addr show to {address}").strip())


def state_of(host: Host) -> dict[str, object]:
    data = json.loads(host.file(STATE_FILE).content_string)
    assert isinstance(data, dict), data
    return data


@pytest.fixture(scope="module")
def balancers(request: pytest.FixtureRequest, group: Group) -> dict[str, Host]:
    inventory = request.config.getoption("ansible_inventory")
    return {name: testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory) for name in group(LOADBALANCER_GROUP)}


# ---- on each node -------------------------------------------------------------------------


def test_keepalived_running_and_enabled(host: Host) -> None:
    if not is_balancer(host):
        pytest.skip("not a load balancer")
    svc = host.service("keepalived")
    assert svc.is_running and svc.is_enabled
    assert host.file("/etc/systemd/system/keepalived.service.d/override.conf").exists


def test_no_handover_drop_left_behind(host: Host) -> None:
    """roles/keepalived's hand-over drops new connections to the floating addresses while it
    drains; left behind (after the failover suite's rolling restarts), it would refuse every
    new client once this node holds the address again."""
    if not is_balancer(host):
        pytest.skip("not a load balancer")
    script = host.file("/usr/local/sbin/keepalived-halab-handover")
    assert script.is_file and script.user == "root" and script.mode == 0o755
    with host.sudo():
        tables = host.check_output("nft list tables")
    assert "halab_handover" not in tables, tables


def test_state_file_agrees_with_the_address(host: Host, addr: Addr) -> None:
    if not is_balancer(host):
        pytest.skip("not a load balancer")
    f = host.file(STATE_FILE)
    assert f.is_file and f.mode == 0o644 and f.user == "root"
    assert host.file(STATE_FILE.rsplit("/", 1)[0]).mode == 0o755
    state = state_of(host)
    assert set(state) == STATE_KEYS, state
    floating = next(fl for fl in FLOATING if fl.name == STATE_FLOATING)
    assert state["node"] == name_of(host)
    assert state["address"] == addr(name_of(host))
    assert state["floating"] == floating.name
    assert state["floating_address"] == floating.address
    assert state["state"] in STATES
    since = state["since"]
    assert isinstance(since, (int, float)) and 0 < since <= time.time() + 1
    assert (state["state"] == "MASTER") is holds(host, floating.address), state


def agreeing(host: Host, prom: testinfra.modules.file.File, labels: str, name: str) -> tuple[object, str] | None:
    """The state file's state and the metric file's text, once both tell the same state (the
    notify hook writes one after the other: a transition can fall in between)."""
    current, text = state_of(host)["state"], prom.content_string
    line = re.search(rf'^halab_vrrp_state\{{{re.escape(labels)},state="{current}"\}} 1$', text, re.M)
    return (current, text) if line or name != STATE_FLOATING else None


def test_textfile_metric(host: Host, addr: Addr) -> None:
    if not is_balancer(host):
        pytest.skip("not a load balancer")
    for fl in FLOATING:
        prom = host.file(f"{TEXTFILE_DIR}/halab_vrrp_{fl.name}.prom")
        assert prom.is_file and prom.mode == 0o644
        labels = f'vrrp_instance="{fl.name}",address="{fl.address}"'

        seen = poll(lambda: agreeing(host, prom, labels, fl.name), timeout=30, every=1)  # noqa: B023
        assert seen, f"{prom.path} never agreed with {STATE_FILE}"
        current, text = seen
        for s in STATES:
            value = 1 if fl.name == STATE_FLOATING and s == current else None
            line = re.search(rf"^halab_vrrp_state\{{{re.escape(labels)},state=\"{s}\"\}} ([01])$", text, re.M)
            assert line, f"no {s} line in {prom.path}"
            if value is not None:
                assert int(line.group(1)) == value
        assert re.search(rf"^halab_vrrp_state_change_timestamp_seconds\{{{re.escape(labels)}\}} [0-9.]+$", text, re.M)
    # ... and node_exporter serves it (asked from the node itself, over the loopback rule;
    # generous: an emulated VM under load answered its 5 s scrape too late once).
    metrics = host.check_output(f"curl -fsS -m 30 http://{addr(name_of(host))}:{TOPO.services.port('node_exporter')}/metrics")
    assert "halab_vrrp_state{" in metrics


def test_vrrp_accepted_from_the_peers_only(host: Host, addr: Addr, group: Group) -> None:
    rules = host.check_output("nft list chain inet filter input")
    found = VRRP_RULE.findall(rules)
    if not is_balancer(host):
        assert not found and "l4proto 112" not in rules and "l4proto vrrp" not in rules, rules
        return
    assert len(found) == 1, rules
    sources = set(re.findall(r"[0-9.]+", found[0]))
    members = {addr(n) for n in group(LOADBALANCER_GROUP)}
    peers = members - {addr(name_of(host))}
    assert peers <= sources <= members, (sources, members)
    assert "l4proto 112 accept" not in rules and "l4proto vrrp accept" not in rules  # never from anywhere


# ---- across the load balancers (run once) ---------------------------------------------------


def test_exactly_one_holder(balancers: dict[str, Host]) -> None:
    for fl in FLOATING:
        members = {n.name for n in TOPO.group(fl.group)}
        holders = [name for name, h in balancers.items() if name in members and holds(h, fl.address)]
        assert len(holders) == 1, f"{fl.name} ({fl.address}) held by {holders}"


def test_same_nginx_configuration(balancers: dict[str, Host]) -> None:
    """Every file NGINX reads (as `nginx -T` names them) has the same content on every balancer."""
    sums: dict[str, dict[str, str]] = {}
    for name, h in balancers.items():
        assert h.service("nginx").is_running, name
        dump = h.check_output("nginx -T 2>/dev/null")
        files = sorted(set(re.findall(r"^# configuration file (\S+):$", dump, re.M)))
        assert any(f.endswith("/nginx.conf") for f in files), files
        out = h.check_output("sha256sum " + " ".join(files))
        sums[name] = {line.split()[1]: line.split()[0] for line in out.splitlines()}
    first, *others = sums
    for other in others:
        assert sums[other] == sums[first], f"{other} and {first} differ: {set(sums[other].items()) ^ set(sums[first].items())}"


def nginx_files(dump: str) -> dict[str, str]:
    """`nginx -T`'s output: each file it read, by path, and its text."""
    parts = re.split(r"^# configuration file (\S+):$", dump, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_clients_kept_alive_as_the_role_says(balancers: dict[str, Host]) -> None:
    """The site keeps clients' connections alive for nginx_lb_client_keepalive_timeout, once
    (a hand-over closes them by a reload, never by a changed setting)."""
    want = str(NGINX_LB_DEFAULTS["nginx_lb_client_keepalive_timeout"])
    for name, h in balancers.items():
        files = nginx_files(h.check_output("nginx -T 2>/dev/null"))
        site = next(text for path, text in files.items() if path.endswith("/halab.conf"))
        found = re.findall(r"^\s*keepalive_timeout (\S+);", site, re.M)
        assert found == [want], f"{name}: the site's keepalive_timeout is {found}, the role's default {want}"

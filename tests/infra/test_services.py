"""Every node: its services run, are enabled, and listen only where they should."""

from __future__ import annotations

import re

import pytest
from testinfra.host import Host

from tests.support.model import API_GROUP, LOADBALANCER_GROUP, MONITORING_GROUP, REDIS_GROUP, TOPO, instances_on
from tests.support.net import LOOPBACK

testinfra_hosts = ["ansible://all"]

service_port = TOPO.services.port
# Alertmanager's cluster (gossip) port, its default: the lab runs one Alertmanager, so nothing may listen there.
ALERTMANAGER_CLUSTER_PORT = 9094


def groups_of(host: Host) -> list[str]:
    return list(host.ansible.get_variables()["group_names"])


def name_of(host: Host) -> str:
    return str(host.ansible.get_variables()["inventory_hostname"])


def private(host: Host) -> str:
    v = host.ansible.get_variables()
    return str(v.get("halab_private_address") or v["ansible_host"])


def listeners(host: Host, port: int) -> set[str]:
    out = host.check_output(f"ss -Hltn 'sport = :{port}'")
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


@pytest.mark.parametrize("unit", ["nftables", "prometheus-node-exporter"])
def test_base_services(host: Host, unit: str) -> None:
    svc = host.service(unit)
    assert svc.is_enabled
    if unit != "nftables":  # oneshot, RemainAfterExit
        assert svc.is_running
    else:
        assert host.run("systemctl is-active nftables").stdout.strip() == "active"


def test_node_exporter_on_private_address_only(host: Host) -> None:
    assert listeners(host, service_port("node_exporter")) == {private(host)}


def test_input_policy_drop(host: Host) -> None:
    rules = host.check_output("nft list chain inet filter input")
    assert "policy drop" in rules


def test_journald_persistent(host: Host) -> None:
    assert host.file("/etc/systemd/journald.conf.d/10-persistent.conf").contains("^Storage=persistent")
    assert host.file("/var/log/journal").is_directory


def test_redis(host: Host) -> None:
    if REDIS_GROUP not in groups_of(host):
        pytest.skip("not a redis node")
    for unit in ("redis-server", "prometheus-redis-exporter"):
        assert host.service(unit).is_running and host.service(unit).is_enabled
    assert listeners(host, service_port("redis")) == {private(host), LOOPBACK}
    assert listeners(host, service_port("redis_exporter")) == {private(host)}
    out = host.run(f"redis-cli -h {LOOPBACK} -p {service_port('redis')} set probe 1")
    assert "NOAUTH" in out.stdout + out.stderr
    assert host.file("/etc/redis/redis.conf").mode == 0o640
    assert host.file("/etc/redis/redis.conf").contains("^appendonly yes")
    assert host.file("/etc/redis/redis.conf").contains("^maxmemory-policy noeviction")
    # The running server records its stalls (fsync, fork...) for LATENCY LATEST.
    threshold = host.run(
        'REDISCLI_AUTH="$(cat /etc/redis/admin.password)" redis-cli --user admin --no-auth-warning '
        f"-h {LOOPBACK} -p {service_port('redis')} CONFIG GET latency-monitor-threshold"
    )
    assert threshold.stdout.split() == ["latency-monitor-threshold", "100"], threshold.stdout + threshold.stderr


def test_todo_api(host: Host) -> None:
    if API_GROUP not in groups_of(host):
        pytest.skip("not an api node")
    instances = {str(i.id): i for i in instances_on(name_of(host))}
    assert sorted(instances) == sorted(str(n) for n in host.ansible.get_variables()["todo_api_instances"])
    for n, instance in instances.items():
        svc = host.service(f"todo-api@{n}")
        assert svc.is_running and svc.is_enabled
        assert host.check_output(f"systemctl show todo-api@{n} -p MemoryMax") == "MemoryMax=536870912"
        assert host.check_output(f"systemctl show todo-api@{n} -p User --value") == "todo-api"
        # the default 1024 made an instance unreachable under ~1,100 idle connections
        assert int(host.check_output(f"systemctl show todo-api@{n} -p LimitNOFILE --value")) >= 65536
        env = host.file(f"/etc/todo-api/{n}.env")
        assert env.mode == 0o640 and env.user == "root" and env.group == "todo-api"
        assert host.socket(f"unix://{instance.socket}").is_listening
        score = host.check_output(f"systemd-analyze security todo-api@{n} --no-pager | tail -1")
        m = re.search(r"exposure level for .*: ([0-9.]+)", score)
        assert m and float(m.group(1)) <= 2.0, score
        assert listeners(host, instance.port) == {private(host)}
    assert host.exists("todo-apictl")


def test_nginx(host: Host) -> None:
    if LOADBALANCER_GROUP not in groups_of(host):
        pytest.skip("not a load balancer")
    for unit in ("nginx", "prometheus-nginx-exporter", "mtail", "halab-upstream-watch"):
        assert host.service(unit).is_running and host.service(unit).is_enabled
    assert listeners(host, service_port("nginx_stub_status")) == {LOOPBACK}
    assert listeners(host, service_port("nginx_exporter")) == {private(host)}
    assert listeners(host, service_port("mtail")) == {private(host)}
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    host.run_expect([0], "nginx -t")


def test_upstream_watcher_watches_every_instance_with_one_privilege(host: Host) -> None:
    """The watcher that shuts NGINX out of a silent instance: every instance of the model is a
    peer, it resets NGINX's workers' packets (the user of nginx.conf), it runs as a throwaway
    user with CAP_NET_ADMIN alone, and with every instance answering nothing is shut out."""
    if LOADBALANCER_GROUP not in groups_of(host):
        pytest.skip("not a load balancer")
    pid = host.check_output("systemctl show -p MainPID --value halab-upstream-watch")
    argv = host.file(f"/proc/{pid}/cmdline").content_string.split("\0")
    peers = {argv[i + 1] for i, arg in enumerate(argv) if arg == "--peer"}
    assert peers == {f"{i.address}:{i.port}" for i in TOPO.instances}
    worker_user = re.search(r"^user\s+([^;\s]+)", host.file("/etc/nginx/nginx.conf").content_string, re.M)
    assert worker_user and argv[argv.index("--user") + 1] == worker_user.group(1), (worker_user, argv)
    assert "halab_upstream_watch" not in host.check_output("nft list tables")
    status = host.file(f"/proc/{pid}/status").content_string
    caps = {k: int(v, 16) for k, v in re.findall(r"^(Cap(?:Eff|Bnd|Amb)):\s+([0-9a-f]+)$", status, re.M)}
    granted = 1 << 12  # CAP_NET_ADMIN (linux/capability.h)
    assert caps == {"CapEff": granted, "CapBnd": granted, "CapAmb": granted}, caps
    assert host.check_output(f"stat -c %u /proc/{pid}") != "0"


def test_monitoring(host: Host) -> None:
    if MONITORING_GROUP not in groups_of(host):
        pytest.skip("not a monitoring node")
    for unit in ("prometheus", "prometheus-alertmanager", "halab-alert-log"):
        assert host.service(unit).is_running and host.service(unit).is_enabled
    assert listeners(host, service_port("prometheus")) == {private(host)}
    assert listeners(host, service_port("alertmanager")) == {private(host)}
    assert listeners(host, service_port("alert_log")) == {LOOPBACK}
    assert listeners(host, ALERTMANAGER_CLUSTER_PORT) == set()
    host.run_expect([0], "promtool check config /etc/prometheus/prometheus.yml")

"""Every node: its services run, are enabled, and listen only where they should."""

from __future__ import annotations

import re

import pytest

testinfra_hosts = ["ansible://all"]


def groups_of(host) -> list[str]:
    return host.ansible.get_variables()["group_names"]


def private(host) -> str:
    v = host.ansible.get_variables()
    return str(v.get("halab_private_address") or v["ansible_host"])


def listeners(host, port: int) -> set[str]:
    out = host.check_output(f"ss -Hltn 'sport = :{port}'")
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


@pytest.mark.parametrize("unit", ["nftables", "prometheus-node-exporter"])
def test_base_services(host, unit):
    svc = host.service(unit)
    assert svc.is_enabled
    if unit != "nftables":  # oneshot, RemainAfterExit
        assert svc.is_running
    else:
        assert host.run("systemctl is-active nftables").stdout.strip() == "active"


def test_node_exporter_on_private_address_only(host):
    assert listeners(host, 9100) == {private(host)}


def test_input_policy_drop(host):
    rules = host.check_output("nft list chain inet filter input")
    assert "policy drop" in rules


def test_journald_persistent(host):
    assert host.file("/etc/systemd/journald.conf.d/10-persistent.conf").contains("^Storage=persistent")
    assert host.file("/var/log/journal").is_directory


def test_redis(host):
    if "redis" not in groups_of(host):
        pytest.skip("not a redis node")
    for unit in ("redis-server", "prometheus-redis-exporter"):
        assert host.service(unit).is_running and host.service(unit).is_enabled
    assert listeners(host, 6379) == {private(host), "127.0.0.1"}
    assert listeners(host, 9121) == {private(host)}
    out = host.run("redis-cli -h 127.0.0.1 set probe 1")
    assert "NOAUTH" in out.stdout + out.stderr
    assert host.file("/etc/redis/redis.conf").mode == 0o640
    assert host.file("/etc/redis/redis.conf").contains("^appendonly yes")
    assert host.file("/etc/redis/redis.conf").contains("^maxmemory-policy noeviction")


def test_todo_api(host):
    if "api" not in groups_of(host):
        pytest.skip("not an api node")
    for n in host.ansible.get_variables()["todo_api_instances"]:
        svc = host.service(f"todo-api@{n}")
        assert svc.is_running and svc.is_enabled
        assert host.check_output(f"systemctl show todo-api@{n} -p MemoryMax") == "MemoryMax=536870912"
        assert host.check_output(f"systemctl show todo-api@{n} -p User --value") == "todo-api"
        env = host.file(f"/etc/todo-api/{n}.env")
        assert env.mode == 0o640 and env.user == "root" and env.group == "todo-api"
        assert host.socket(f"unix:///run/todo-api-{n}/manage.sock").is_listening
        score = host.check_output(f"systemd-analyze security todo-api@{n} --no-pager | tail -1")
        m = re.search(r"exposure level for .*: ([0-9.]+)", score)
        assert m and float(m.group(1)) <= 2.0, score
    assert listeners(host, 8000) == {private(host)}
    assert host.exists("todo-apictl")


def test_nginx(host):
    if "loadbalancer" not in groups_of(host):
        pytest.skip("not a load balancer")
    for unit in ("nginx", "prometheus-nginx-exporter"):
        assert host.service(unit).is_running and host.service(unit).is_enabled
    assert listeners(host, 8080) == {"127.0.0.1"}  # stub_status
    assert listeners(host, 9113) == {private(host)}
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    host.run_expect([0], "nginx -t")


def test_monitoring(host):
    if "monitoring" not in groups_of(host):
        pytest.skip("not a monitoring node")
    for unit in ("prometheus", "prometheus-alertmanager"):
        assert host.service(unit).is_running and host.service(unit).is_enabled
    assert listeners(host, 9090) == {private(host)}
    assert listeners(host, 9093) == {"127.0.0.1"}
    assert listeners(host, 9094) == set()  # no alertmanager cluster port
    host.run_expect([0], "promtool check config /etc/prometheus/prometheus.yml")

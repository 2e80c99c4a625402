"""The page's stack on loopback, without the lab: redis-server, two todo-api instances and an
NGINX whose site is rendered from roles/nginx_lb's own templates (so the /status/ paths tested
here are the ones the role deploys), serving roles/frontend/files/www and a config.json rendered
from roles/frontend's template.

One load balancer here, named like this machine (NGINX's $hostname, which it sends as X-Balancer),
whose /status/balancers/<name> path proxies to this same NGINX's /status/balancer. No keepalived
runs on loopback, so the stack writes a stand-in VRRP state file (MASTER of the loopback "public"
address) into its temporary directory; on the lab, keepalived's notify hook writes the real one.

    .venv/bin/python -m tests.browser.local_stack      # runs until Ctrl-C, prints the URL
    HALAB_BROWSER_TARGET=local .venv/bin/pytest -q tests/browser

Everything listens on 127.0.0.1 only; state lives under a temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2
import yaml

from lab.topology import API_GROUP, LOADBALANCER_GROUP, MONITORING_GROUP, REDIS_GROUP, SENTINEL_GROUP, api_instances
from tests.support.model import TOPO
from tests.support.net import LOOPBACK, free_port, tcp_open
from tests.support.run import REPO, venv_tool
from tests.support.wait import wait_until

WWW = REPO / "roles" / "frontend" / "files" / "www"
NGINX_LB = REPO / "roles" / "nginx_lb"
FRONTEND = REPO / "roles" / "frontend"

INSTANCES = (1, 2)
# The one load balancer: NGINX names itself with gethostname() (lower-cased) in $hostname.
BALANCER = socket.gethostname().lower()


def _free_ports() -> dict[str, int]:
    """Distinct loopback ports nothing listens on; the API instances' are consecutive (the k-th on api + k).
    No Prometheus runs here: nothing listens on its port."""
    ports: dict[str, int] = {}
    taken: list[int] = []
    for name, count in (("redis", 1), ("api", len(INSTANCES)), ("nginx", 1), ("stub", 1), ("prometheus", 1)):
        ports[name] = free_port(count=count, avoid=taken)
        taken += range(ports[name], ports[name] + count)
    return ports


def _wait_port(port: int, timeout: float = 20) -> None:
    wait_until(f"something listening on {LOOPBACK}:{port}", lambda: tcp_open(LOOPBACK, port), timeout, every=0.1)


def _defaults(role: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((role / "defaults" / "main.yml").read_text()))


def _env() -> jinja2.Environment:
    # trim_blocks like Ansible's template module
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(NGINX_LB / "templates"), str(FRONTEND / "templates")]), trim_blocks=True
    )
    env.filters["comment"] = lambda s: "\n".join(f"# {line}" for line in str(s).splitlines())
    env.filters["to_json"] = json.dumps
    env.filters["to_nice_json"] = lambda v, indent=4: json.dumps(v, indent=indent, sort_keys=True)
    env.filters["bool"] = lambda v: v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes", "on")
    return env


class LocalStack:
    def __init__(self) -> None:
        self.ports = _free_ports()
        self.dir = Path(tempfile.mkdtemp(prefix="halab-fe-"))
        self.dir.chmod(0o755)  # NGINX workers (nobody) read the web root below it
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = f"http://{LOOPBACK}:{self.ports['nginx']}/"
        # the lab's rule for ports (lab.topology.api_instances), here on loopback
        socket = f"{self.dir}/manage-{{instance}}.sock"
        self.instances = api_instances([("local", LOOPBACK, INSTANCES)], self.ports["api"], socket)
        self.sockets = {str(i.id): i.socket for i in self.instances}
        self.balancers = [BALANCER]
        self.public_address = LOOPBACK
        # Stand-in for keepalived's state file, on the loopback route ONLY (see the module's doc).
        self.balancer_state_file = self.dir / "balancer.json"

    # -- what the page needs --------------------------------------------------------------
    def _vars(self) -> dict[str, Any]:
        host = "local"
        variables: dict[str, Any] = {**_defaults(NGINX_LB), **_defaults(FRONTEND)}
        # The model as the halab_model plugins give it to the roles, on loopback ports.
        ports = {**TOPO.services.ports, "http": self.ports["nginx"], "todo_api": self.ports["api"],
                 "nginx_stub_status": self.ports["stub"], "prometheus": self.ports["prometheus"]}
        halab = {
            "ports": ports,
            "limits": dict(TOPO.services.limits),
            "groups": {"loadbalancer": LOADBALANCER_GROUP, "api": API_GROUP, "monitoring": MONITORING_GROUP,
                       "redis": REDIS_GROUP, "sentinel": SENTINEL_GROUP},
            "balancer_state_file": str(self.balancer_state_file),
            "floating": {"public": {"address": self.public_address, "group": LOADBALANCER_GROUP, "prefixlen": 32}},
        }
        variables.update(
            ansible_managed="rendered by tests/browser/local_stack.py",
            groups={API_GROUP: [host], MONITORING_GROUP: [host], LOADBALANCER_GROUP: self.balancers},
            hostvars={name: {"halab_address": LOOPBACK} for name in [host, *self.balancers]},
            inventory_hostname=BALANCER,
            halab=halab,
            halab_address=LOOPBACK,
            halab_public_address=self.public_address,
            halab_api_instances=[asdict(i) for i in self.instances],
            nginx_lb_web_root=str(self.dir / "www"),
        )
        # role defaults may refer to each other ({{ ... }}): render those strings once more
        env = _env()
        for key, value in list(variables.items()):
            if isinstance(value, str) and "{{" in value:
                variables[key] = env.from_string(value).render(**variables)
        return variables

    def _nginx_conf(self) -> str:
        env = _env()
        v = self._vars()
        upstream = env.get_template("upstream.conf.j2").render(**v)
        site = env.get_template("halab.conf.j2").render(**v)
        site = re.sub(r"^\s*listen \[::\].*$", "", site, flags=re.M)
        nginx = self.ports["nginx"]
        site = site.replace(f"listen {nginx} default_server", f"listen {LOOPBACK}:{nginx} default_server")
        site = site.replace("/var/log/nginx/", f"{self.dir}/")
        d = self.dir
        return f"""
pid {d}/nginx.pid;
error_log {d}/error.log info;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    sendfile on;
{upstream}
{site}
}}
"""

    def _web_root(self) -> None:
        www = self.dir / "www"
        shutil.copytree(WWW, www)
        v = self._vars()
        cfg = _env().get_template("config.json.j2").render(**v)
        (www / "config.json").write_text(cfg)

    def set_balancer_state(self, state: str | None) -> None:
        """The stand-in of keepalived's notify hook (loopback only): write the state file as it does
        (JSON, atomically by rename, 0644), or remove it (None: keepalived not running)."""
        if state is None:
            self.balancer_state_file.unlink(missing_ok=True)
            return
        record = {"node": BALANCER, "address": LOOPBACK, "floating": "public",
                  "floating_address": self.public_address, "state": state, "since": round(time.time(), 3)}
        tmp = self.balancer_state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.chmod(0o644)
        tmp.replace(self.balancer_state_file)

    # -- processes ------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the child)
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))

    def start(self) -> LocalStack:
        try:
            redis = ["redis-server", "--port", str(self.ports["redis"]), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
            self._spawn("redis", redis)
            _wait_port(self.ports["redis"])
            for inst in self.instances:
                env = {
                    **os.environ,
                    "TODO_API_INSTANCE": str(inst.id),
                    "TODO_API_HOST": inst.address,
                    "TODO_API_PORT": str(inst.port),
                    "TODO_API_MANAGEMENT": f"unix:{inst.socket}",
                    "TODO_API_REDIS_URL": f"redis://{LOOPBACK}:{self.ports['redis']}/0",
                    # no cgroup limit here: compare RSS with 512 MB, like the lab's MemoryMax
                    "TODO_API_CGROUP_ROOT": str(self.dir / "no-cgroup"),
                    "TODO_API_MEMORY_LIMIT_MB": "512",
                }
                self._spawn(f"api{inst.id}", [venv_tool("todo-api")], env)
            for inst in self.instances:
                _wait_port(inst.port)
            self._web_root()
            self.set_balancer_state("MASTER")
            conf = self.dir / "nginx.conf"
            conf.write_text(self._nginx_conf())
            subprocess.run(["nginx", "-t", "-q", "-p", str(self.dir), "-c", str(conf)], check=True)
            self._spawn("nginx", ["nginx", "-p", str(self.dir), "-c", str(conf), "-g", "daemon off;"])
            _wait_port(self.ports["nginx"])
        except BaseException:
            self.stop()
            raise
        return self

    def apictl(self, instance: str, verb: str) -> subprocess.CompletedProcess[str]:
        cmd = [venv_tool("todo-apictl"), "--socket", self.sockets[instance], verb]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def _exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit)
    stack = LocalStack().start()
    print(f"halab page on {stack.url} (state in {stack.dir}); Ctrl-C stops it", flush=True)
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        stack.stop()

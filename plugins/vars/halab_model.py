"""Vars plugin: the system model (topology.yml) for every inventory.

Why a vars plugin: the lab's inventory is generated, Vagrant writes its own and
real servers bring a hand-written one, but all of them run the same roles. A
vars plugin enabled in ansible.cfg gives every one of them the same `halab`
variable (the ports and paths of topology.yml's `services`) and the rules in
halab_model.yml beside this file (each host's address, every API instance),
without a group_vars file per inventory or a copy of any value.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleError
from ansible.inventory.group import Group
from ansible.plugins.vars import BaseVarsPlugin

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab import topology

DOCUMENTATION = """
    name: halab_model
    short_description: The halab system model (topology.yml services and derived rules)
    requirements:
      - Enabled in ansible.cfg (vars_plugins_enabled)
    description:
      - Gives the group C(all) the variable C(halab) (ports, management socket) read from topology.yml's services,
        and the derived variables of halab_model.yml (halab_address, halab_api_instances, halab_host_instances).
      - An inventory of real servers names its own floating addresses in its C(all) vars, C(halab_floating)
        (name -> address with prefix, group); without it, topology.yml's (the lab's) apply.
    options:
      stage:
        ini:
          - key: stage
            section: vars_halab_model
        env:
          - name: ANSIBLE_VARS_PLUGIN_STAGE
    extends_documentation_fragment:
      - vars_plugin_staging
"""

RULES_FILE = Path(__file__).with_suffix(".yml")


class VarsModule(BaseVarsPlugin):
    REQUIRES_ENABLED = True
    is_stateless = True

    def get_vars(self, loader: Any, path: str, entities: Any, cache: bool = True) -> dict[str, Any]:
        if not isinstance(entities, list):
            entities = [entities]
        all_group = next((e for e in entities if isinstance(e, Group) and e.name == "all"), None)
        if all_group is None:
            return {}
        model_file = loader.load_from_file(str(topology.TOPOLOGY_FILE), cache="all", unsafe=True)
        rules = loader.load_from_file(str(RULES_FILE), cache="all", unsafe=True, trusted_as_template=True)
        services = model_file["services"]
        network = ipaddress.IPv4Network(model_file["network"]["cidr"])
        model = {
            "ports": dict(services["ports"]),
            "management_socket": services["management_socket"],
            "limits": dict(services["limits"]),
            "balancer_state_file": services["balancer_state_file"],
            # addresses that move between a group's members (VRRP): name -> address, group, prefix
            "floating": site_floating(all_group.get_vars())
            or {
                str(name): {"address": spec["address"], "group": spec["group"], "prefixlen": network.prefixlen}
                for name, spec in (model_file.get("floating") or {}).items()
            },
            "credentials_dir": str(topology.REPO_ROOT / "playbooks" / "credentials"),
            # the inventory groups the roles are written against (playbooks' `hosts:` name them too)
            "groups": {
                "loadbalancer": topology.LOADBALANCER_GROUP,
                "api": topology.API_GROUP,
                "redis": topology.REDIS_GROUP,
                "sentinel": topology.SENTINEL_GROUP,
                "monitoring": topology.MONITORING_GROUP,
            },
        }
        return {"halab": model, **rules}


def site_floating(inventory_vars: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The floating addresses an inventory of real servers gives (`halab_floating` in its
    `all` vars, each address with its prefix: `203.0.113.20/24`), in place of the lab's.

    topology.yml's addresses are the lab's network; real servers live on their own, and
    their inventory is the one place that knows it.
    """
    floating = inventory_vars.get("halab_floating") or {}
    if not isinstance(floating, dict):
        raise AnsibleError("halab_floating: a mapping of name -> {address: A.B.C.D/prefix, group: G}")
    model = {}
    for name, spec in floating.items():
        try:
            interface = ipaddress.IPv4Interface(str(spec["address"]))
            group = str(spec["group"])
        except (KeyError, TypeError, ValueError) as exc:
            raise AnsibleError(f"halab_floating.{name}: needs address A.B.C.D/prefix and group ({exc})") from exc
        if interface.network.prefixlen == interface.max_prefixlen:
            raise AnsibleError(f"halab_floating.{name}: give the address with its network's prefix (e.g. /24)")
        model[str(name)] = {"address": str(interface.ip), "group": group, "prefixlen": interface.network.prefixlen}
    return model

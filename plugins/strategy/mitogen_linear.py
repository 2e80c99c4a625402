"""Mitogen's linear strategy, found through ansible.cfg's strategy_plugins.

Mitogen (pinned in requirements/controller.lock) keeps one Python interpreter
per host and runs modules inside it, instead of starting a new interpreter and
re-importing Ansible's module_utils for every task. That start-up is most of
a task's cost on qemu without KVM (the Vagrant route here). Select it with
ANSIBLE_STRATEGY=mitogen_linear; the default strategy stays Ansible's own.
"""

from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule

__all__ = ["StrategyModule"]

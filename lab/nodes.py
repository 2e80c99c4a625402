"""Old home of the lab driver's names, kept only for tests/support/lab.py, which reads
them here while it is being written: lab/state.py, lab/ssh.py, lab/node.py and lab/lab.py
replaced this module. Delete it once tests/support imports BRIDGE from lab.lab and
machine_name from lab.node."""

from .lab import BRIDGE as BRIDGE
from .node import machine_name as machine_name

"""Where the lab keeps its state on the host.

The lab is host-wide (one bridge, one address range), so its state lives in
host-wide places rather than in a checkout: any clone can clean up after a
lab another clone left behind.
"""

import os
from pathlib import Path

STATE_DIR = Path(os.environ.get("HALAB_STATE_DIR", "/var/lib/halab"))
CACHE_DIR = Path(os.environ.get("HALAB_CACHE_DIR", "/var/cache/halab"))
STATE_FILE = STATE_DIR / "state.json"
NODES_DIR = STATE_DIR / "nodes"
SSH_DIR = STATE_DIR / "ssh"
SSH_KEY = SSH_DIR / "id_ed25519"
KNOWN_HOSTS = SSH_DIR / "known_hosts"
# `ssh app1` from the host: Debian's ssh_config includes /etc/ssh/ssh_config.d/*.conf.
SSH_CLIENT_CONFIG = Path(os.environ.get("HALAB_SSH_CLIENT_CONFIG", "/etc/ssh/ssh_config.d/halab.conf"))

"""What the test suites share, all read from the system model (lab.topology).

- model:   the topology once (TOPO), the public URL, the instance -> node map, nodes by group
- run:     a subprocess that fails a test with its output; the venv's own tools
- wait:    polling with a bound (poll, wait_until)
- net:     TCP and HTTP from the controller (tcp_open, free_port, http, http_url)
- ansible: ansible-playbook runs and their PLAY RECAP
- lab:     the nspawn lab: labctl, a root command on a node, its state, a host snapshot
- vagrant: the Vagrant VMs: their inventory, ssh, a root command on a VM
- probes:  read-only looks at a provisioned lab, whichever route built it
"""

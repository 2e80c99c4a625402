"""The Vagrant route's Python: vlab (vagrant/vlab.py, run as vagrant/vlab) and the box builder (build_box.py)."""

"""Small workloads for labs: run them in containers as `python3 -m netlab.apps.<name>`."""

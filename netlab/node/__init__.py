"""The node's parts, as a kubelet has them: pod sandboxes, the container runtime's
client (bundles, runc, images), cgroups and metrics, each given only what it needs."""

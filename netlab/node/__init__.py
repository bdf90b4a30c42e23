"""The node's parts, as kubelet's: container runtime client, cgroups, metrics, ..."""

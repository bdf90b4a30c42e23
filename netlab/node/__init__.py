"""The node's parts, as kubelet's: pod manager, container runtime client, volumes, CNI, kube-proxy, prober."""

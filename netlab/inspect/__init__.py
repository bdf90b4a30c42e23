"""`netlab inspect`: captures read back, VXLAN decoded, addresses named by the lab's address book."""

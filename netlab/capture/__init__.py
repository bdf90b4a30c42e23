"""Capture on the lab's interfaces: packet sockets, pcapng, the address book."""

"""netlab's sidecar mesh: route tables, balancing, rate limits, tracing, metrics
and the proxy that applies them (see mesh/README.md for the module map)."""

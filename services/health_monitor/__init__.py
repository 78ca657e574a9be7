"""health-monitor: the live view of nodes and sessions, status truth when an owner dies, the
HTTP health endpoints and cluster metrics, and the operator's dashboard."""

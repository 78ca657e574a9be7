"""health-monitor: the live view of nodes and sessions, status truth when an owner dies, and
the HTTP health endpoints."""

"""wactl: the command-line tool of the gateway (see main.py)."""

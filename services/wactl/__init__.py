"""wactl: the command-line tool of the gateway. main.py assembles the app from one module per
command group; gateway.py and running.py are the plumbing they share, render.py the output."""

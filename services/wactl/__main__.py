"""`python -m services.wactl`: the same app as the `wactl` script."""

from services.wactl.main import app

app(prog_name="wactl")

"""`python -m services.devstack run`: the command behind `make run`."""

from services.devstack.main import app

app()

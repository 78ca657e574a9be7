from services.devstack.main import app

app()

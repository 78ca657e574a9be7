from services.wactl.main import app

app(prog_name="wactl")

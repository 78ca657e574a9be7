"""API keys of the HTTP API: made, stored hashed, checked and revoked. The http-gateway
checks them; `wactl apikey` and `make run` manage them (the admin library of keys)."""

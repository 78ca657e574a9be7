"""wa-sim: a simulated WhatsApp (servers and the user's phone) for development, tests and benchmarks."""

"""The send logic the outbound-queue and the session actor share.

- `journal.py`: the send journal in NATS KV (at most once: intent before each send);
- `ledger.py`: every lifecycle step moves the journal record and publishes its event;
- `policy.py`: pacing, retries and expiry as plain code.

The outbound-queue accepts, schedules, expires and fails waiting sends; the owning session
actor paces and executes them. Both go through this package, neither through the other.
"""

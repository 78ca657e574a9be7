"""Real WhatsApp through neonize 0.5.2 (whatsmeow in a Go shared library, driven via ctypes).

One `NeonizeClient` per session; each connection attempt runs a fresh Go client (an
"incarnation", with its own uuid in goneonize's process-wide client map) on its own thread.
The adapter talks to the library's exported functions directly rather than through
`NewAClient`, because the traps below need control that class does not give:

- goneonize keeps its clients in plain Go maps without a lock: concurrent writers (or a
  reader during a write) abort the whole process ("fatal error: concurrent map writes",
  reproduced here with 200 parallel Stop calls). `guard.GoMapGuard` serialises them.
- `Neonize()` blocks for the client's whole life and, after an abandoned pairing, forever
  (it waits on a QR channel nobody closes, or polls for a device id that never comes).
  It therefore runs on a daemon thread of its own, never on the shared executor: a stuck
  call must neither starve the pool nor hang interpreter exit.
- Deleting a client from the Go map between its connect and its first event makes Go
  dereference a nil store; Stop waits for the incarnation to settle first.
- whatsmeow reconnects by itself after a drop, and neonize exposes no switch for it. The
  actor must be the only one deciding reconnects, so every drop retires the incarnation
  (Disconnect sets whatsmeow's "expected disconnect", which ends its reconnect loop) before
  the actor hears of it, and every `connect()` starts a new incarnation.
- Each `Neonize()` call opens the store through a new sqlstore container that neither
  Stop nor the garbage collector ever closes: one file handle per connection attempt,
  whatever the uuid. Attempts are therefore only made when WhatsApp answers at all (a
  cheap shared TCP probe), the fd limit is raised, and the factory counts attempts.

One file per concern:

- `library`: imports neonize (and so loads the Go library) on first use; ctypes prototypes.
- `protobufs`: neonize's protobuf classes, without loading the Go library.
- `callbacks`: the C callbacks Go calls, routed to the client they belong to.
- `guard`: the Go map guard.
- `translate`: pure translation of whatsmeow's messages to ours and back, and of Go's errors.
- `snapshot`: consistent copies of a live store through the Go library's own SQLite.
- `process`: process-wide settings (executor size, fd limit, fd 1).
- `client`: `NeonizeClient`, one session's connection.
- `factory`: `NeonizeClientFactory`, the process-wide state and services for the clients.

Nothing is imported here: `make_factory` imports `factory` only for a neonize node.
"""

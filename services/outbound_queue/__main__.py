from services.outbound_queue.main import main

main()

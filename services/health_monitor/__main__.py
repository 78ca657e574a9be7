from services.health_monitor.main import main

main()

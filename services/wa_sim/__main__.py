from services.wa_sim.main import main

main()

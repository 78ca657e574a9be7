from services.session_actor.main import main

main()

from services.persistence.main import main

main()

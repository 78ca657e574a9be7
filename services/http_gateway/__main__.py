from services.http_gateway.main import main

main()

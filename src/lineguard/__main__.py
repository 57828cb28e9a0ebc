from lineguard.cli import main

main()

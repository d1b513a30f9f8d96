from pbclients.cli.app import main

main()

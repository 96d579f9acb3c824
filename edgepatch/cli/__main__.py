from edgepatch.cli.main.main import main

main()

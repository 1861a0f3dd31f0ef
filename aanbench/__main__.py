from aanbench.cli import main

main()

from aanbench.entry import main

main()

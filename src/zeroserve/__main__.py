from zeroserve.cli import main

main()

"""`python -m mgft.cli`: the `mgft` command, for environments without the console script."""

from mgft.cli.main import main

main()

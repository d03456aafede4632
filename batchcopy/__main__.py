"""`python -m batchcopy`: the command line."""

from batchcopy.cli.root import main

if __name__ == "__main__":
    main()

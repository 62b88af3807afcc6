import sys

from bench.intents import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m minifm.cli ...` is the same as `minifm ...`."""
import sys

from minifm.cli import main

sys.exit(main())

"""`python -m failoverd` is the same as the `failoverd` console script."""

import sys

from failoverd.cli import main

sys.exit(main())

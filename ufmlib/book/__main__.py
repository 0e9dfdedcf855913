"""``python -m ufmlib.book [options]``: run the notebooks and build the book (``ufm regenerate``)."""

import sys

from .cli import main

sys.exit(main())

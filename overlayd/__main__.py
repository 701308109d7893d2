"""``python -m overlayd``: the same as the ``overlayd`` command."""

import sys

from overlayd.cli import main

sys.exit(main())

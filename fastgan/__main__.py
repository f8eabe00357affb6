"""``python -m fastgan ...`` (and ``torchrun ... -m fastgan train ...``): the ``fastgan`` command."""
import sys

from .app.cli import main

sys.exit(main())

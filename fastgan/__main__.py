"""``python -m fastgan ...`` (and ``torchrun ... -m fastgan train ...``): the ``fastgan`` command."""
import sys

from .cli import main

sys.exit(main())

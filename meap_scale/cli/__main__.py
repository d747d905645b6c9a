"""``python -m meap_scale.cli``: the ``meap-scale`` command."""

import sys

from meap_scale.cli import main

sys.exit(main())

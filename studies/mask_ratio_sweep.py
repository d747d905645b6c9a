"""MEAP mask ratio (0 = the NTP baseline) x learning rate, over seeds, at one size and budget.

Usage: `python studies/mask_ratio_sweep.py [--preset smoke|laptop|paper] [--store DIR_OR_URL] ...`
or `ray job submit --working-dir . -- python studies/mask_ratio_sweep.py --preset smoke`. `--help` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the job's working dir holds meap_scale

from meap_scale.cli.study import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("mask_ratio_sweep"))

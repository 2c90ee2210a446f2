"""Statistics shared by ``calibrate``, ``report`` and ``check``: the area under the budget curve,
the instrument's resolution (A/A minimum detectable effect) and the paper's primary test
(Wilcoxon signed-rank over test cases of the seed-averaged metric). Definitions:
``docs/statistics.md``."""

from albench.stats.curves import aubc, record_aubc, record_curve
from albench.stats.resolution import mde, seeds_needed
from albench.stats.tests import primary_wilcoxon, seed_averaged_case_metric

__all__ = ["aubc", "mde", "primary_wilcoxon", "record_aubc", "record_curve", "seed_averaged_case_metric",
           "seeds_needed"]

"""albench: a benchmark suite for active learning in brain MR image segmentation."""

__version__ = "0.1.0"

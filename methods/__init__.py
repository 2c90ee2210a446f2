"""Reference active-learning methods shipped with albench, one module each."""


from albench.cli import entry

entry()

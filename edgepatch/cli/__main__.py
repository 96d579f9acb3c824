"""``python -m edgepatch.cli``: the same as the ``edgepatch`` command."""
from edgepatch.cli.main import main

main()

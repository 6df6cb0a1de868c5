"""``python -m drivenet_patch.cli``: the ``pdn`` program."""

from drivenet_patch.cli import run

run()

"""``python -m drivenet_patch.app.cli``: the ``pdn`` program."""

from drivenet_patch.app.cli import run

run()

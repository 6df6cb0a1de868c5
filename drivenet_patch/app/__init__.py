"""The application layer: the `pdn` command line, the demo and the HTML report, over the library below.

Nothing in the library (the other packages of `drivenet_patch`, `attacks`, `defenses`) imports this package;
import-linter enforces it.
"""

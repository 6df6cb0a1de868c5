"""Every road-seed base of the toolkit, in one place.

Which roads a command draws decides what "held out" means, so the bases live together and are
chosen far apart. Training data (``pdn data synth``) draws its road seeds from ``0 .. 2**31`` at
random (see :mod:`drivenet_patch.data.synthesize`), so a collision with a base below is unlikely
but not impossible (documented, not prevented).

- ``DRIVE_SEED``: ``pdn drive`` road ``i`` is generated from ``DRIVE_SEED + i`` by default; the
  world frames of ``pdn certify --world`` come from a synthesis seeded ``DRIVE_SEED + seed``.
- ``ATTACK_SEED_BASE + 1000 * seed + i``: the roads ``pdn attack`` optimises on.
- ``HELDOUT_SEED_BASE + ...``: the roads of the attack's own held-out check (``attack.json``).
- ``EVAL_SEED_BASE + ...``: ``pdn attack eval``'s offline scenes (and ``pdn certify --sticker``).
- ``LOOP_SEED_BASE + 1000 * seed``: ``pdn attack eval``'s closed-loop roads.
- ``PHYSICAL_ATTACK_SEED_BASE + 1000 * seed + i``: the roads of ``pdn certify --physical ... --attack``
  (adaptive stickers against the physical certificate, :mod:`defenses.physical_attack`); no other
  command draws from this base, so those roads are held out from training and from every attack.
"""

from __future__ import annotations

__all__ = ["ATTACK_SEED_BASE", "DRIVE_SEED", "EVAL_SEED_BASE", "HELDOUT_SEED_BASE", "LOOP_SEED_BASE",
           "PHYSICAL_ATTACK_SEED_BASE"]

DRIVE_SEED = 10_000
ATTACK_SEED_BASE = 1_000_000
HELDOUT_SEED_BASE = 2_000_000
EVAL_SEED_BASE = 3_000_000
LOOP_SEED_BASE = 4_000_000
PHYSICAL_ATTACK_SEED_BASE = 5_000_000

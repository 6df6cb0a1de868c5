"""The attack's example figure: frames without and with the sticker, the predicted steering drawn in."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["draw_examples", "write_examples"]


def draw_examples(path: Path, clean: Any, adv: Any, clean_deg: Any, adv_deg: Any, titles: list[str]) -> None:
    """A 2-row figure: frames without (top) and with (bottom) the sticker, predicted steering drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from drivenet_patch.storage.atomic import atomic_path

    n = len(clean)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 3.3), squeeze=False)
    for row, (imgs, degs, label) in enumerate(((clean, clean_deg, "clean"), (adv, adv_deg, "sticker"))):
        for j in range(n):
            ax = axes[row, j]
            img = imgs[j].permute(1, 2, 0).cpu().numpy()
            h, w = img.shape[:2]
            ax.imshow(np.clip(img, 0, 1))
            # a steering needle from the bottom centre, angle exaggerated 3x for visibility
            a = math.radians(3.0 * float(degs[j]))
            ax.plot([w / 2, w / 2 - 0.45 * h * math.sin(a)], [h - 1, h - 1 - 0.45 * h * math.cos(a)],
                    color="lime" if row == 0 else "red", lw=2)
            ax.set_title(f"{label}: {float(degs[j]):+.1f} deg" + (f"\n{titles[j]}" if row == 0 else ""), fontsize=8)
            ax.axis("off")
    fig.suptitle("predicted steering (+ = left; needle angle x3)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_examples(path: Path, model: Any, scenes: Any, texture: Any, dirt: bool, n: int = 5) -> None:
    """``examples.png``: ``n`` scenes spread over the approach distances, without and with the sticker."""
    import numpy as np
    import torch

    from attacks.base import attack_mode

    info = scenes.info
    if "distance_m" in info:
        order = np.argsort(info["distance_m"].to_numpy())
        pick = order[np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)]
        titles = [f"{info['distance_m'].iloc[i]:.1f} m before" for i in pick]
    else:
        pick = np.linspace(0, len(scenes) - 1, min(n, len(scenes))).round().astype(int)
        titles = [f"frame {i}" for i in pick]
    idx = torch.as_tensor(pick, device=scenes.device)
    with torch.no_grad(), attack_mode(model):
        clean = scenes.background[idx]
        adv = scenes.apply(texture.to(scenes.device), idx, dirt)
        cd, ad = model(clean), model(adv)
    draw_examples(path, clean, adv, cd, ad, titles)

"""The drive's video sink: road 0 of a closed-loop drive as an ``.mp4`` (or ``.avi``), steering drawn in."""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.storage.atomic import atomic_path

__all__ = ["annotate_frame", "open_video"]


def _probe_fourcc(folder: Path, code: str, suffix: str, size: tuple[int, int], fps: float) -> bool:
    """Whether this OpenCV build can open a writer for ``code`` (tried on a throw-away file)."""
    fd, name = tempfile.mkstemp(prefix=".probe.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        writer = cv2.VideoWriter(name, cv2.VideoWriter_fourcc(*code), fps, size)
        ok = writer.isOpened()
        writer.release()
        return ok
    finally:
        Path(name).unlink(missing_ok=True)


def open_video(path: Path, size: tuple[int, int], fps: float, stack: ExitStack) -> tuple[cv2.VideoWriter, Path]:
    """An open writer whose file is renamed into place when ``stack`` closes without error.

    ``.mp4`` uses the 'mp4v' codec and falls back, with a warning, to Motion-JPEG in an ``.avi``
    next to it when this OpenCV build cannot write it; ``.avi`` uses Motion-JPEG.
    """
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".avi"):
        raise PDNError(f"video: expected a .mp4 or .avi file name, got {str(path)!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PDNError(f"video: cannot create the folder of {path} ({exc.strerror or exc})") from None
    code = "mp4v" if suffix == ".mp4" else "MJPG"
    if code == "mp4v" and not _probe_fourcc(path.parent, code, suffix, size, fps):
        warnings.warn(f"this OpenCV build cannot write mp4v; writing Motion-JPEG to {path.with_suffix('.avi')}",
                      RuntimeWarning, stacklevel=3)
        code, path = "MJPG", path.with_suffix(".avi")
    tmp = stack.enter_context(atomic_path(path))
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*code), fps, size)
    if not writer.isOpened():
        raise PDNError(f"video: cannot open a {code} video writer for {path}")
    stack.callback(writer.release)  # runs before the rename (LIFO)
    return writer, path


def annotate_frame(frame: np.ndarray, scale: int, predicted: float, expert: float, offset_m: float, t: float,
                   intervention: bool = False, sticker_in_view: bool = False, road: int = 0) -> np.ndarray:
    """One video frame: the model's view upscaled, steering bars and a caption.

    The green bar is the policy's command and the white bar the expert's, drawn from the image
    centre toward the side they steer to (full width = 10 degrees); a red border marks an
    intervention.

    Args:
        frame: (H, W, 3) uint8 RGB, what the policy saw.
        scale: integer upscaling (nearest neighbour: the pixels stay those the model saw).

    Returns:
        (H', W', 3) uint8 BGR with even H' and W' (codecs want even sizes).
    """
    img = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), None, fx=scale, fy=scale,
                     interpolation=cv2.INTER_NEAREST)
    h, w = img.shape[:2]
    cx = w // 2
    px_per_deg = (w / 2 - 4) / 10.0
    for row, value, colour in ((h - 24, predicted, (40, 220, 40)), (h - 13, expert, (255, 255, 255))):
        end = round(cx - float(np.clip(value, -10.0, 10.0)) * px_per_deg)  # positive = left
        cv2.rectangle(img, (min(cx, end), row), (max(cx, end), row + 7), colour, -1)
    cv2.line(img, (cx, h - 28), (cx, h - 3), (0, 0, 255), 1)
    if intervention:
        cv2.rectangle(img, (1, 1), (w - 2, h - 2), (0, 0, 255), 4)
        cv2.putText(img, "INTERVENTION", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 255), 2, cv2.LINE_AA)
    if sticker_in_view:
        cv2.putText(img, "sticker", (w - 80, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 220, 255), 2, cv2.LINE_AA)
    caption = np.zeros((42, w, 3), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(caption, f"model {predicted:+6.2f} deg", (6, 16), font, 0.45, (40, 220, 40), 1, cv2.LINE_AA)
    cv2.putText(caption, f"expert {expert:+6.2f} deg", (w // 3, 16), font, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(caption, f"road {road}   t {t:6.1f} s   offset {offset_m:+5.2f} m", (6, 35), font, 0.45,
                (200, 200, 200), 1, cv2.LINE_AA)
    out = np.concatenate([img, caption], axis=0)
    return np.pad(out, ((0, out.shape[0] % 2), (0, out.shape[1] % 2), (0, 0)))

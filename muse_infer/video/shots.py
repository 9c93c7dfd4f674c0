"""Shot boundaries for ``--cuts shots``, found by PySceneDetect (the optional ``scenes`` extra).

``find_shot_cuts(path, duration)`` runs PySceneDetect's ``AdaptiveDetector`` (the change of hue,
saturation and lightness between consecutive frames, compared with its rolling average, so camera
motion is not a cut; its defaults, but any shot length: ``shot_windows`` merges short shots, and
PySceneDetect's 15-frame minimum is 7.5 s at 2 frames a second) over the video and returns the times where a new shot starts. On
a synthetic reel it finds every hard cut where ``ContentDetector`` at its default threshold missed one. PySceneDetect reads the file with its own decoder (OpenCV), so a
video cut at shots is read twice: once for the boundaries, once (``window_reader``) for the windows'
frames; fixed windows read it once. The windows are then planned by ``windows.shot_windows``.

PySceneDetect is imported here only, when shots are asked for; without it ``import_scenedetect``
raises ``MissingExtraError`` naming the extra.
"""

from __future__ import annotations

from ..errors import MissingExtraError, VideoDecodeError
from ..filenames import c_library_path

EXTRA_HINT = "pip install 'muse-infer[scenes]'"


def import_scenedetect():
    """The ``scenedetect`` module, or ``MissingExtraError`` saying how to install it."""
    try:
        import scenedetect
    except ImportError:
        raise MissingExtraError(
            f"--cuts shots needs PySceneDetect, which is not installed: {EXTRA_HINT} "
            "(or use fixed windows: --window SECONDS)"
        ) from None
    return scenedetect


def find_shot_cuts(path: str, duration: float) -> list[float]:
    """Times (seconds from the first frame, ascending, inside (0, duration)) where a new shot starts."""
    scenedetect = import_scenedetect()
    try:
        detector = scenedetect.AdaptiveDetector(
            min_scene_len=1
        )  # short shots: windows.shot_windows merges them
        with c_library_path(path) as name:  # OpenCV crashes on a name that is not UTF-8
            scenes = scenedetect.detect(name, detector, show_progress=False)
    except Exception as error:  # noqa: BLE001 - PySceneDetect's errors have no common base
        raise VideoDecodeError(
            path, f"shot detection failed ({' '.join(str(error).split())[:200]})"
        ) from None
    starts = sorted(float(start.seconds) for start, _ in scenes)
    return [t for t in starts if 0 < t < duration]

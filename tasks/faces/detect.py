"""The offline face detector: OpenCV 4.x's Haar cascades, shipped inside its wheel.

Why Haar: it is the one detector whose weights come inside a pinned PyPI package and install
with the rest of requirements.txt. MTCNN (facenet-pytorch 2.6.0) ships its weights too but
pins torch<2.3, so it installs only with --no-deps, outside one `pip install -r`; YuNet,
RetinaFace, insightface and mediapipe fetch model files at run time. OpenCV 5.0 dropped the
cascades, hence the opencv-python-headless 4.x pin.

Masks hide the mouth and nose that the frontal cascades key on: on a masked real photo the
default cascade still finds the face at a low score and alt2 finds nothing, while unmasked
both score 19-26. So both frontal cascades run and their boxes are pooled; the mirrored
profile cascade runs only when neither finds a face.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.errors import UserError

OPENCV_PIN = "opencv-python-headless==4.14.0.94"
FRONTAL = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")
PROFILE = "haarcascade_profileface.xml"
WORK_SIDE = 320  # longer side the photo is reduced to for detection: 384x512 -> 192x256, ~4x faster


class DetectorMissing(UserError):
    """The configured detector cannot run here; the message names the install command."""


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the photo's pixels
    score: float  # merged raw detections behind the box


def cascade_dir() -> Path:
    """Where the installed OpenCV keeps its Haar cascades; DetectorMissing if it has none."""
    try:
        import cv2
    except ImportError:
        raise DetectorMissing(f"data.face.detector=haar needs OpenCV: pip install {OPENCV_PIN} "
                              "(pinned in requirements.txt), or set data.face.detector=none and give "
                              "data.face.boxes") from None
    folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "/nonexistent")
    missing = [n for n in (*FRONTAL, PROFILE) if not (folder / n).is_file()]
    if missing:
        raise DetectorMissing(
            f"data.face.detector=haar: OpenCV {cv2.__version__} has no Haar cascades ({missing[0]} not in "
            f"{folder}; OpenCV 5.0 removed them). Install the 4.x build that ships them: "
            f"pip install {OPENCV_PIN} (pinned in requirements.txt)")
    return folder


def detector_version(name: str) -> str:
    """What a change of which would change the boxes: part of the cache's identity."""
    if name == "none":
        return "none"
    cascade_dir()  # first: it names the install command when OpenCV is missing
    import cv2

    return f"haar/opencv-{cv2.__version__}"


class HaarDetector:
    """Thread-safe: each thread loads its own cascades (a CascadeClassifier is not shareable)."""

    def __init__(self, min_score: float):
        self.folder = cascade_dir()
        self.min_score = min_score
        self._local = threading.local()

    def _cascades(self):
        import cv2

        if not hasattr(self._local, "frontal"):
            self._local.frontal = [cv2.CascadeClassifier(str(self.folder / n)) for n in FRONTAL]
            self._local.profile = cv2.CascadeClassifier(str(self.folder / PROFILE))
        return self._local.frontal, self._local.profile

    def detect(self, gray: np.ndarray) -> Detection | None:
        """The largest face in a greyscale photo (H, W uint8) scoring at least min_score."""
        import cv2

        h, w = gray.shape
        factor = max(1, int(np.ceil(max(h, w) / WORK_SIDE)))
        small = cv2.resize(gray, (w // factor, h // factor), interpolation=cv2.INTER_AREA) if factor > 1 else gray
        small = cv2.equalizeHist(small)  # phone photos: backlight and dim rooms
        frontal, profile = self._cascades()
        found = [f for c in frontal for f in self._run(c, small)]
        if not found:  # a turned head: the cascade knows one side, so look at the mirror too
            sw = small.shape[1]
            found = self._run(profile, small) + [(sw - x - bw, y, bw, bh, n)
                                                 for x, y, bw, bh, n in self._run(profile, small[:, ::-1].copy())]
        good = [f for f in found if f[4] >= self.min_score]
        if not good:
            return None
        # The subject's face is the largest in a selfie-like photo; small hits are background.
        x, y, bw, bh, n = max(good, key=lambda f: (f[2] * f[3], f[4]))
        return Detection((x * factor, y * factor, (x + bw) * factor, (y + bh) * factor), float(n))

    @staticmethod
    def _run(cascade, img: np.ndarray) -> list[tuple[int, int, int, int, int]]:
        side = min(img.shape)
        boxes, counts = cascade.detectMultiScale2(img, scaleFactor=1.1, minNeighbors=1,
                                                  minSize=(max(24, side // 6),) * 2)
        return [(*map(int, b), int(n)) for b, n in zip(boxes, counts)]


def make_detector(name: str, min_score: float) -> HaarDetector | None:
    return None if name == "none" else HaarDetector(min_score)

"""The locked environment holds exactly one onnxruntime and one OpenCV distribution.

insightface declares `onnxruntime` and `opencv-python`; installed beside `onnxruntime-gpu` and
`opencv-python-headless` they would overwrite each other's files in site-packages.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys


def _installed() -> set[str]:
    return {
        (dist.metadata["Name"] or "").lower().replace("_", "-")
        for dist in importlib.metadata.distributions()
    }


def test_exactly_one_onnxruntime_distribution() -> None:
    runtimes = sorted(name for name in _installed() if name.startswith("onnxruntime"))
    linux_x86 = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
    assert runtimes == (["onnxruntime-gpu"] if linux_x86 else ["onnxruntime"])


def test_exactly_one_opencv_distribution() -> None:
    opencv = sorted(name for name in _installed() if name.startswith("opencv"))
    assert opencv == ["opencv-python-headless"]


def test_insightface_is_installed_and_imports_against_them() -> None:
    assert importlib.metadata.version("insightface").startswith("2.")
    import cv2
    import insightface  # noqa: F401
    import onnxruntime
    from insightface.model_zoo import model_zoo
    from insightface.utils import face_align

    assert "CPUExecutionProvider" in onnxruntime.get_available_providers()
    # insightface runs on the very cv2 and onnxruntime this environment pins, not on copies.
    assert face_align.cv2 is cv2 and model_zoo.onnxruntime is onnxruntime

"""Camera definitions (held as YAML data) and their geometry: amplifiers, detectors, focal plane."""

from coadd_core.camera.camera import (
    CAMERA_FILES,
    Amplifier,
    Camera,
    Detector,
    load_camera,
    standard_amp_sections,
)

__all__ = ["Amplifier", "Camera", "Detector", "load_camera", "standard_amp_sections", "CAMERA_FILES"]

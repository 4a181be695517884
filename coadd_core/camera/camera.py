"""Camera geometry and electronics: amplifiers, detectors and the focal plane.

The camera is held as data (``megaprime.yaml``); this module turns it into frozen
dataclasses and applies a raw file's own header keywords on top, because the header is
what describes the pixels actually in the file (old files, binned or simulated small
CCDs).

Coordinates: assembled pixels are 0-based with pixel centres at integers (LSST
convention, see ``coadd_core.geom``); raw pixels are those of the untrimmed frame; the
focal plane is in millimetres with the boresight at the origin, +x West and +y North for
an unrotated pointing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator, Mapping

import numpy as np
import yaml

from coadd_core.geom import Box

__all__ = [
    "Amplifier",
    "Detector",
    "Camera",
    "load_camera",
    "standard_amp_sections",
    "CAMERA_FILES",
]

log = logging.getLogger(__name__)

CAMERA_FILES: dict[str, str] = {"megaprime": "megaprime.yaml"}
"""Camera name (lower case) -> definition file inside this package."""

_EMPTY = Box(0, 0, -1, -1)
_READ_NOISE_INVALID = 60000.0  # old MegaPrime files write 65535 when the value is unknown


def _empty_box() -> Box:
    return _EMPTY


@dataclass(frozen=True)
class Amplifier:
    """One readout amplifier: where its pixels are in the raw and assembled frames.

    Attributes
    ----------
    name : amplifier name (``"A"``, ``"B"``), the suffix of its header keywords.
    bbox : place of the amp's imaging pixels in the assembled CCD (``CSECx``).
    raw_bbox : the amp's section of the raw frame, data plus bias columns (``ASECx``).
    raw_data_bbox : imaging (= trim) section in the raw frame (``DSECx``/``TSECx``).
    raw_serial_overscan_bbox : bias columns read with each row (``BSECx``).
    raw_serial_prescan_bbox : serial prescan; empty for MegaPrime.
    raw_parallel_overscan_bbox : rows read after the last imaging row, over the data
        columns; empty when the frame has none.
    gain : e-/ADU. read_noise : e- rms. saturation, suspect_level, max_linear : ADU.
    """

    name: str
    bbox: Box
    raw_bbox: Box
    raw_data_bbox: Box
    raw_serial_overscan_bbox: Box
    raw_serial_prescan_bbox: Box = field(default_factory=_empty_box)
    raw_parallel_overscan_bbox: Box = field(default_factory=_empty_box)
    gain: float = 1.0
    read_noise: float = 0.0
    saturation: float = 65535.0
    suspect_level: float = 65535.0
    max_linear: float = 65535.0

    def __post_init__(self) -> None:
        if self.bbox.shape != self.raw_data_bbox.shape:
            raise ValueError(
                f"amp {self.name}: data section {self.raw_data_bbox} and assembled box "
                f"{self.bbox} differ in size"
            )

    @property
    def raw_x_offset(self) -> int:
        """Raw x minus assembled x for this amp's data pixels."""
        return self.raw_data_bbox.x0 - self.bbox.x0

    @property
    def raw_y_offset(self) -> int:
        """Raw y minus assembled y for this amp's data pixels."""
        return self.raw_data_bbox.y0 - self.bbox.y0


def standard_amp_sections(
    amp_width: int, height: int, *, bias_width: int = 32, parallel_overscan: int = 32
) -> dict[str, dict[str, Box]]:
    """Sections of a MegaPrime-style spliced raw frame of any size.

    Two amps side by side, each with ``bias_width`` serial overscan columns on its outer
    edge and ``parallel_overscan`` rows on top; ``amp_width`` x ``height`` imaging pixels
    per amp. Full-size MegaPrime is ``standard_amp_sections(1024, 4612)``.
    """
    if amp_width <= 0 or height <= 0 or bias_width < 0 or parallel_overscan < 0:
        raise ValueError("amplifier dimensions must be positive")
    raw_w = 2 * (amp_width + bias_width)
    raw_top = height + parallel_overscan - 1
    a_data = Box(bias_width, 0, bias_width + amp_width - 1, height - 1)
    b_data = Box(bias_width + amp_width, 0, bias_width + 2 * amp_width - 1, height - 1)
    return {
        "A": {
            "ASEC": Box(0, 0, bias_width + amp_width - 1, height - 1),
            "DSEC": a_data,
            "BSEC": Box(0, 0, bias_width - 1, raw_top) if bias_width else _EMPTY,
            "CSEC": Box(0, 0, amp_width - 1, height - 1),
        },
        "B": {
            "ASEC": Box(bias_width + amp_width, 0, raw_w - 1, height - 1),
            "DSEC": b_data,
            "BSEC": Box(raw_w - bias_width, 0, raw_w - 1, raw_top) if bias_width else _EMPTY,
            "CSEC": Box(amp_width, 0, 2 * amp_width - 1, height - 1),
        },
    }


def _parallel_overscan(data: Box, raw_height: int) -> Box:
    if data.y1 + 1 > raw_height - 1:
        return _EMPTY
    return Box(data.x0, data.y1 + 1, data.x1, raw_height - 1)


def _header_section(header: Mapping[str, Any], key: str) -> Box | None:
    """A FITS section keyword as a Box; None when absent or the ``[0:0,0:0]`` dummy."""
    value = header.get(key)
    if not isinstance(value, str):
        return None
    try:
        box = Box.from_fits_section(value)
    except ValueError:
        log.warning("ignoring unparsable section %s=%r", key, value)
        return None
    if box.x1 < 0 or box.y1 < 0 or box.is_empty():
        return None
    return box


def _header_float(header: Mapping[str, Any], key: str) -> float | None:
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Detector:
    """One CCD: identity, place in the focal plane, raw layout, electronics, defects.

    ``rotation_deg`` is the rotation of the assembled pixel grid relative to the focal
    plane (0 or 180 for MegaPrime). ``defects`` are boxes in assembled pixels.
    """

    id: int
    name: str
    serial: str
    focal_plane_x_mm: float
    focal_plane_y_mm: float
    rotation_deg: float
    pixel_size_mm: float
    raw_width: int
    raw_height: int
    amplifiers: tuple[Amplifier, ...]
    dark_current: float = 0.0
    defects: tuple[Box, ...] = ()

    def __post_init__(self) -> None:
        raw = self.raw_bbox
        for amp in self.amplifiers:
            for box in (amp.raw_bbox, amp.raw_data_bbox, amp.raw_serial_overscan_bbox):
                if not box.is_empty() and not raw.contains(box):
                    raise ValueError(f"{self.name} amp {amp.name}: {box} outside raw frame {raw}")

    # -- geometry ----------------------------------------------------------------------
    @property
    def bbox(self) -> Box:
        """Assembled (trimmed) CCD box."""
        box = self.amplifiers[0].bbox
        for amp in self.amplifiers[1:]:
            box = box.union(amp.bbox)
        return box

    @property
    def raw_bbox(self) -> Box:
        return Box.from_size(self.raw_width, self.raw_height)

    @property
    def center_mm(self) -> tuple[float, float]:
        return (self.focal_plane_x_mm, self.focal_plane_y_mm)

    @property
    def amplifier_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.amplifiers)

    def amplifier(self, name: str) -> Amplifier:
        for amp in self.amplifiers:
            if amp.name == name:
                return amp
        raise KeyError(f"{self.name} has no amplifier {name!r}")

    def _rotation_matrix(self) -> np.ndarray:
        theta = math.radians(self.rotation_deg)
        c, s = round(math.cos(theta), 15), round(math.sin(theta), 15)
        return np.array([[c, -s], [s, c]])

    def _pixel_center(self) -> tuple[float, float]:
        return self.bbox.center

    def pixel_to_focal_plane(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Assembled pixel positions -> focal-plane millimetres."""
        cx, cy = self._pixel_center()
        rot = self._rotation_matrix()
        dx = (np.asarray(x, dtype=float) - cx) * self.pixel_size_mm
        dy = (np.asarray(y, dtype=float) - cy) * self.pixel_size_mm
        return (
            self.focal_plane_x_mm + rot[0, 0] * dx + rot[0, 1] * dy,
            self.focal_plane_y_mm + rot[1, 0] * dx + rot[1, 1] * dy,
        )

    def focal_plane_to_pixel(self, fx: Any, fy: Any) -> tuple[np.ndarray, np.ndarray]:
        """Focal-plane millimetres -> assembled pixel positions."""
        cx, cy = self._pixel_center()
        rot = self._rotation_matrix()
        dx = (np.asarray(fx, dtype=float) - self.focal_plane_x_mm) / self.pixel_size_mm
        dy = (np.asarray(fy, dtype=float) - self.focal_plane_y_mm) / self.pixel_size_mm
        # inverse of a rotation is its transpose
        return (cx + rot[0, 0] * dx + rot[1, 0] * dy, cy + rot[0, 1] * dx + rot[1, 1] * dy)

    def _amp_index(self, x: np.ndarray, assembled: bool) -> np.ndarray:
        idx = np.full(x.shape, -1, dtype=int)
        for i, amp in enumerate(self.amplifiers):
            box = amp.bbox if assembled else amp.raw_bbox
            inside = (x >= box.x0 - 0.5) & (x < box.x1 + 0.5)
            idx[inside & (idx < 0)] = i
        return idx

    def assembled_to_raw(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Assembled pixel positions -> raw-frame positions (through each amp's offset)."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        idx = self._amp_index(x, assembled=True)
        if np.any(idx < 0):
            raise ValueError("position outside the assembled CCD")
        dx = np.array([a.raw_x_offset for a in self.amplifiers])[idx]
        dy = np.array([a.raw_y_offset for a in self.amplifiers])[idx]
        return x + dx, y + dy

    def raw_to_assembled(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Raw-frame positions (in an amp section) -> assembled pixel positions."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        idx = self._amp_index(x, assembled=False)
        if np.any(idx < 0):
            raise ValueError("position outside every amplifier section")
        dx = np.array([a.raw_x_offset for a in self.amplifiers])[idx]
        dy = np.array([a.raw_y_offset for a in self.amplifiers])[idx]
        return x - dx, y - dy

    def boresight_pixel(self) -> tuple[float, float]:
        """Assembled pixel position of the focal-plane origin (may lie off the CCD)."""
        x, y = self.focal_plane_to_pixel(0.0, 0.0)
        return float(x), float(y)

    def raw_wcs_cards(
        self, ra_deg: float, dec_deg: float, sky_rotation_deg: float, pixel_scale_arcsec: float
    ) -> dict[str, Any]:
        """TAN WCS keywords of a raw extension, as MegaPrime writes them.

        CRVAL is the pointing (boresight), CRPIX the boresight in 1-based *raw-frame*
        pixels (so assembled x = raw x - prescan offset), CD the pixel scale with the
        sign flips of the detector orientation. ``sky_rotation_deg`` is the position
        angle (East of North) of the focal-plane +y axis; 0 puts North up, East left.
        """
        bx, by = self.boresight_pixel()
        amp0 = self.amplifiers[0]
        theta = math.radians(sky_rotation_deg)
        # focal plane (x West, y North at theta=0) -> (xi East, eta North)
        fp_to_sky = np.array(
            [[-math.cos(theta), math.sin(theta)], [math.sin(theta), math.cos(theta)]]
        )
        cd = fp_to_sky @ self._rotation_matrix() * (pixel_scale_arcsec / 3600.0)
        return {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CUNIT1": "deg",
            "CUNIT2": "deg",
            "CRVAL1": float(ra_deg),
            "CRVAL2": float(dec_deg),
            "CRPIX1": bx + amp0.raw_x_offset + 1.0,
            "CRPIX2": by + amp0.raw_y_offset + 1.0,
            # 12 significant digits survive the 20-character FITS value field unchanged
            "CD1_1": float(f"{cd[0, 0]:.12g}"),
            "CD1_2": float(f"{cd[0, 1]:.12g}"),
            "CD2_1": float(f"{cd[1, 0]:.12g}"),
            "CD2_2": float(f"{cd[1, 1]:.12g}"),
        }

    # -- header keywords --------------------------------------------------------------
    def header_cards(self) -> dict[str, Any]:
        """Section, electronics and identity keywords of a raw extension header."""
        cards: dict[str, Any] = {
            "CCDNAME": self.serial,
            "DATASEC": self.data_section().to_fits_section(),
            "BIASSEC": "[0:0,0:0]",
            "CCDSIZE": Box.from_size(self.bbox.width, self.bbox.height).to_fits_section(),
        }
        for amp in self.amplifiers:
            n = amp.name
            cards[f"ASEC{n}"] = amp.raw_bbox.to_fits_section()
            cards[f"DSEC{n}"] = amp.raw_data_bbox.to_fits_section()
            cards[f"TSEC{n}"] = amp.raw_data_bbox.to_fits_section()
            if not amp.raw_serial_overscan_bbox.is_empty():
                cards[f"BSEC{n}"] = amp.raw_serial_overscan_bbox.to_fits_section()
            cards[f"CSEC{n}"] = amp.bbox.to_fits_section()
        return cards

    def data_section(self) -> Box:
        """Raw box holding all imaging pixels (``DATASEC``)."""
        box = self.amplifiers[0].raw_data_bbox
        for amp in self.amplifiers[1:]:
            box = box.union(amp.raw_data_bbox)
        return box

    def amplifiers_from_header(self, header: Mapping[str, Any]) -> tuple[Amplifier, ...]:
        """This detector's amplifiers with the raw header's keywords taking precedence.

        Sections: ``ASECx``, ``DSECx`` (else ``TSECx``), ``BSECx``, ``CSECx``; a single
        amp falls back to ``DATASEC``/``BIASSEC``. Electronics: ``GAINx``, ``RDNOISEx``
        (>= 60000 means unknown -> ``RDNOISE``), ``SATURATE``, ``MAXLINx`` (else
        ``MAXLIN``). The parallel overscan is derived from ``NAXIS2``.
        """
        raw_height = int(header.get("NAXIS2") or self.raw_height)
        saturate = _header_float(header, "SATURATE")
        rdnoise_all = _header_float(header, "RDNOISE")
        maxlin_all = _header_float(header, "MAXLIN")
        single = len(self.amplifiers) == 1
        amps = []
        for amp in self.amplifiers:
            n = amp.name
            data = _header_section(header, f"DSEC{n}") or _header_section(header, f"TSEC{n}")
            if data is None and single:
                data = _header_section(header, "DATASEC")
            data = data or amp.raw_data_bbox
            overscan = _header_section(header, f"BSEC{n}")
            if overscan is None and single:
                overscan = _header_section(header, "BIASSEC")
            overscan = overscan or amp.raw_serial_overscan_bbox
            raw_box = _header_section(header, f"ASEC{n}") or amp.raw_bbox
            bbox = _header_section(header, f"CSEC{n}")
            if bbox is None:
                bbox = amp.bbox if amp.bbox.shape == data.shape else Box.from_size(
                    data.width, data.height, amp.bbox.x0, amp.bbox.y0
                )
            gain = _header_float(header, f"GAIN{n}") or amp.gain
            read_noise = _header_float(header, f"RDNOISE{n}")
            if read_noise is None or read_noise >= _READ_NOISE_INVALID:
                read_noise = rdnoise_all if rdnoise_all is not None and rdnoise_all < _READ_NOISE_INVALID else amp.read_noise
            max_linear = _header_float(header, f"MAXLIN{n}") or maxlin_all or amp.max_linear
            amps.append(
                dataclasses.replace(
                    amp,
                    bbox=bbox,
                    raw_bbox=raw_box,
                    raw_data_bbox=data,
                    raw_serial_overscan_bbox=overscan,
                    raw_parallel_overscan_bbox=_parallel_overscan(data, raw_height),
                    gain=float(gain),
                    read_noise=float(read_noise),
                    saturation=float(saturate) if saturate is not None else amp.saturation,
                    max_linear=float(max_linear),
                )
            )
        return tuple(amps)

    # -- derived detectors ------------------------------------------------------------
    def with_layout(
        self,
        amp_width: int,
        height: int,
        *,
        focal_plane_mm: tuple[float, float] | None = None,
        bias_width: int = 32,
        parallel_overscan: int = 32,
    ) -> "Detector":
        """A copy with a MegaPrime-style raw layout of another size (e.g. a small test CCD).

        The new CCD keeps this one's electronics; its defects are this detector's defects
        clipped to the new assembled box (it behaves as the lower-left corner of the
        full chip).
        """
        sections = standard_amp_sections(
            amp_width, height, bias_width=bias_width, parallel_overscan=parallel_overscan
        )
        raw_w = 2 * (amp_width + bias_width)
        raw_h = height + parallel_overscan
        amps = tuple(
            dataclasses.replace(
                amp,
                bbox=sections[amp.name]["CSEC"],
                raw_bbox=sections[amp.name]["ASEC"],
                raw_data_bbox=sections[amp.name]["DSEC"],
                raw_serial_overscan_bbox=sections[amp.name]["BSEC"],
                raw_serial_prescan_bbox=_EMPTY,
                raw_parallel_overscan_bbox=_parallel_overscan(sections[amp.name]["DSEC"], raw_h),
            )
            for amp in self.amplifiers
        )
        new_box = Box.from_size(2 * amp_width, height)
        defects = tuple(
            clipped for d in self.defects if not (clipped := d.intersection(new_box)).is_empty()
        )
        fx, fy = focal_plane_mm if focal_plane_mm is not None else self.center_mm
        return dataclasses.replace(
            self,
            focal_plane_x_mm=float(fx),
            focal_plane_y_mm=float(fy),
            raw_width=raw_w,
            raw_height=raw_h,
            amplifiers=amps,
            defects=defects,
        )


_EXTNAME_RE = re.compile(r"^ccd(\d+)$")


@dataclass(frozen=True)
class Camera:
    """A mosaic camera: detectors placed in the focal plane.

    ``detsize`` is the mosaic size in pixels (``DETSIZE``) and ``boresight_px`` the
    1-based mosaic pixel position of the optical axis; together they convert the
    ``DETSEC`` of a raw header to focal-plane millimetres.
    """

    name: str
    telescope: str
    pixel_size_mm: float
    pixel_scale_arcsec: float
    detsize: tuple[int, int]
    boresight_px: tuple[float, float]
    detectors: tuple[Detector, ...]

    @property
    def plate_scale_arcsec_per_mm(self) -> float:
        return self.pixel_scale_arcsec / self.pixel_size_mm

    def __len__(self) -> int:
        return len(self.detectors)

    def __iter__(self) -> Iterator[Detector]:
        return iter(self.detectors)

    def __getitem__(self, key: int | str) -> Detector:
        for det in self.detectors:
            if det.id == key or det.name == key:
                return det
        raise KeyError(f"camera {self.name} has no detector {key!r}")

    @property
    def detector_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.detectors)

    # -- mosaic sections --------------------------------------------------------------
    def detsize_section(self) -> str:
        """``DETSIZE`` keyword value: the whole mosaic."""
        return f"[1:{self.detsize[0]},1:{self.detsize[1]}]"

    def detsec(self, detector: Detector) -> str:
        """Mosaic section of a detector; reversed ranges mark a 180 deg rotation."""
        w, h = detector.bbox.width, detector.bbox.height
        cx = self.boresight_px[0] + detector.focal_plane_x_mm / self.pixel_size_mm
        cy = self.boresight_px[1] + detector.focal_plane_y_mm / self.pixel_size_mm
        x1 = int(round(cx - (w - 1) / 2.0))
        y1 = int(round(cy - (h - 1) / 2.0))
        x2, y2 = x1 + w - 1, y1 + h - 1
        if round(detector.rotation_deg) % 360 == 180:
            x1, x2, y1, y2 = x2, x1, y2, y1
        return f"[{x1}:{x2},{y1}:{y2}]"

    def _placement_from_detsec(self, header: Mapping[str, Any]) -> tuple[float, float, float] | None:
        value = header.get("DETSEC")
        if not isinstance(value, str):
            return None
        m = re.match(r"^\s*\[(-?\d+):(-?\d+),(-?\d+):(-?\d+)\]\s*$", value)
        if not m:
            return None
        x1, x2, y1, y2 = (int(v) for v in m.groups())
        flip_x, flip_y = x2 < x1, y2 < y1
        if flip_x != flip_y:
            log.warning("DETSEC %s flips one axis only; ignoring it", value)
            return None
        bx, by = self.boresight_px
        detsize = header.get("DETSIZE")
        if isinstance(detsize, str):
            try:
                size: Box | None = Box.from_fits_section(detsize)
            except ValueError:
                size = None
            if size is not None and (size.width, size.height) != tuple(self.detsize):
                log.warning("DETSIZE %s differs from the camera's; ignoring DETSEC", detsize)
                return None
        fx = ((x1 + x2) / 2.0 - bx) * self.pixel_size_mm
        fy = ((y1 + y2) / 2.0 - by) * self.pixel_size_mm
        return fx, fy, 180.0 if flip_x else 0.0

    # -- raw headers ------------------------------------------------------------------
    def detector_from_header(self, header: Mapping[str, Any]) -> Detector:
        """The detector a raw extension header describes, header keywords first.

        The detector is found by ``EXTNAME`` ``ccdNN`` (compressed HDUs: ``EXTVER``).
        Its sections and electronics come from the header where present (see
        :meth:`Detector.amplifiers_from_header`), the raw size from ``NAXIS1/2``, the
        dark current from ``DARKCUR``, the serial from ``CCDNAME``, the focal-plane
        placement from ``DETSEC``; everything else from the camera definition. Defects
        are clipped to the header's CCD size.
        """
        name = str(header.get("EXTNAME", "")).strip()
        m = _EXTNAME_RE.match(name)
        if m is None and isinstance(header.get("EXTVER"), (int, np.integer)):
            m = _EXTNAME_RE.match(f"ccd{int(header['EXTVER']):02d}")
        if m is None:
            raise ValueError(f"header does not name a detector (EXTNAME={name!r})")
        try:
            base = self[int(m.group(1))]
        except KeyError as exc:
            raise ValueError(str(exc)) from exc
        amps = base.amplifiers_from_header(header)
        raw_w = int(header.get("NAXIS1") or max(a.raw_bbox.x1 for a in amps) + 1)
        raw_h = int(header.get("NAXIS2") or base.raw_height)
        bbox = amps[0].bbox
        for amp in amps[1:]:
            bbox = bbox.union(amp.bbox)
        defects = tuple(c for d in base.defects if not (c := d.intersection(bbox)).is_empty())
        fx, fy, rot = base.focal_plane_x_mm, base.focal_plane_y_mm, base.rotation_deg
        placement = self._placement_from_detsec(header)
        if placement is not None:
            fx, fy, rot = placement
        dark = _header_float(header, "DARKCUR")
        serial = header.get("CCDNAME")
        return dataclasses.replace(
            base,
            serial=str(serial) if isinstance(serial, str) and serial.strip() else base.serial,
            focal_plane_x_mm=fx,
            focal_plane_y_mm=fy,
            rotation_deg=rot,
            raw_width=raw_w,
            raw_height=raw_h,
            amplifiers=amps,
            dark_current=dark if dark is not None else base.dark_current,
            defects=defects,
        )


def _camera_from_dict(data: Mapping[str, Any]) -> Camera:
    layout = data["raw_layout"]
    raw_w, raw_h = int(layout["width"]), int(layout["height"])
    pixel_size = float(data["pixel_size_mm"])
    sections = {
        name: {k: Box.from_fits_section(v) for k, v in secs.items()}
        for name, secs in layout["amplifiers"].items()
    }
    detectors = []
    for d in data["detectors"]:
        amps = []
        for name, secs in sections.items():
            e = d["amplifiers"][name]
            amps.append(
                Amplifier(
                    name=name,
                    bbox=secs["CSEC"],
                    raw_bbox=secs["ASEC"],
                    raw_data_bbox=secs["DSEC"],
                    raw_serial_overscan_bbox=secs["BSEC"],
                    raw_serial_prescan_bbox=secs.get("PSEC", _EMPTY),
                    raw_parallel_overscan_bbox=_parallel_overscan(secs["DSEC"], raw_h),
                    gain=float(e["gain"]),
                    read_noise=float(e["read_noise"]),
                    saturation=float(e["saturation"]),
                    suspect_level=float(e["suspect"]),
                    max_linear=float(e["max_linear"]),
                )
            )
        fx, fy = (float(v) for v in d["focal_plane_mm"])
        detectors.append(
            Detector(
                id=int(d["id"]),
                name=str(d["name"]),
                serial=str(d["serial"]),
                focal_plane_x_mm=fx,
                focal_plane_y_mm=fy,
                rotation_deg=float(d["rotation_deg"]),
                pixel_size_mm=pixel_size,
                raw_width=raw_w,
                raw_height=raw_h,
                amplifiers=tuple(amps),
                dark_current=float(d.get("dark_current", 0.0)),
                defects=tuple(Box.from_size(w, h, x0, y0) for x0, y0, w, h in d.get("defects", [])),
            )
        )
    mosaic = data["mosaic"]
    return Camera(
        name=str(data["name"]),
        telescope=str(data.get("telescope", "")),
        pixel_size_mm=pixel_size,
        pixel_scale_arcsec=float(data["pixel_scale_arcsec"]),
        detsize=(int(mosaic["detsize"][0]), int(mosaic["detsize"][1])),
        boresight_px=(float(mosaic["boresight_px"][0]), float(mosaic["boresight_px"][1])),
        detectors=tuple(sorted(detectors, key=lambda det: det.id)),
    )


@lru_cache(maxsize=None)
def load_camera(name: str = "MegaPrime") -> Camera:
    """The camera definition ``name`` (case-insensitive), read from this package's YAML."""
    try:
        filename = CAMERA_FILES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown camera {name!r}; known: {sorted(CAMERA_FILES)}") from None
    text = resources.files(__package__).joinpath(filename).read_text()
    return _camera_from_dict(yaml.safe_load(text))

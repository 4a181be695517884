"""Shared fixtures: a local S3 endpoint (moto server) for storage tests."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

# Dummy credentials: the endpoint is a local moto server that accepts anything.
_DUMMY_KEY = "testing"
_DUMMY_SECRET = "testing"
_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """A running local S3 endpoint with one empty bucket."""

    endpoint_url: str
    bucket: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def url(self, key: str) -> str:
        """``s3://`` URL of ``key`` in the bucket."""
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    def unique_url(self, suffix: str = ".fits") -> str:
        """A fresh key, so tests sharing the server never see each other's objects."""
        return self.url(f"{uuid.uuid4().hex}{suffix}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's threaded S3 server on 127.0.0.1 (free port), with a bucket; stopped at the end."""
    import boto3
    import moto.server as moto_server

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        # Only for this fixture's lifetime, so nothing reaches for real credentials.
        mp.setenv("AWS_ACCESS_KEY_ID", _DUMMY_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", _DUMMY_SECRET)
        mp.setenv("AWS_DEFAULT_REGION", _REGION)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        try:
            bucket = "coadd-test"
            client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=_DUMMY_KEY,
                aws_secret_access_key=_DUMMY_SECRET,
                region_name=_REGION,
            )
            client.create_bucket(Bucket=bucket)
            storage_options = {
                "key": _DUMMY_KEY,
                "secret": _DUMMY_SECRET,
                "client_kwargs": {"endpoint_url": endpoint, "region_name": _REGION},
                # the server is shared by many tests; never trust a stale listing
                "use_listings_cache": False,
            }
            yield S3Server(endpoint_url=endpoint, bucket=bucket, storage_options=storage_options)
        finally:
            server.stop()


# -- exposures with every component set ---------------------------------------------------


def make_sip_wcs(crpix: tuple[float, float] = (1024.123456789012, 2048.987654321098)) -> Any:
    """TAN-SIP WCS with awkward full-precision values (CFHT-like 0.187"/px scale)."""
    import numpy as np
    from astropy.wcs import WCS, Sip

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    wcs.wcs.crpix = list(crpix)
    wcs.wcs.crval = [150.12345678901234, 2.2345678901234567]
    wcs.wcs.cd = np.array(
        [[-5.1934567890123e-05, 1.234567890123456e-07], [-2.345678901234567e-07, 5.1912345678901e-05]]
    )
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[2, 0], a[1, 1], a[0, 2], a[3, 0] = -1.2345678901234567e-07, 3.3e-08, 1.1234567890123e-07, -1.2345e-11
    b[2, 0], b[0, 2], b[1, 2], b[0, 3] = 2.2e-07, -4.567890123456789e-08, 7.7e-12, 5.5e-12
    wcs.sip = Sip(a, b, None, None, wcs.wcs.crpix)
    return wcs


def make_exposure(
    box: Any = None, psf: Any = None, seed: int = 0, extra_plane: bool = True
) -> Any:
    """Random exposure with xy0 != 0 and every component filled in."""
    import numpy as np

    from coadd_core.exposure import Exposure
    from coadd_core.geom import Box
    from coadd_core.image import MaskedImage
    from coadd_core.photocalib import PhotoCalib
    from coadd_core.polygon import ValidPolygon
    from coadd_core.psf import GaussianPsf
    from coadd_core.visit_info import VisitInfo

    rng = np.random.default_rng(seed)
    box = Box.from_size(157, 93, 1234, -56) if box is None else box
    image = rng.normal(10.0, 3.0, box.shape).astype(np.float32)
    image[0, 0] = np.nan
    mi = MaskedImage(
        image,
        rng.integers(0, 1 << 22, box.shape, dtype=np.int32),
        rng.uniform(0.5, 2.0, box.shape).astype(np.float32),
        bbox=box,
    )
    if extra_plane:
        mi.add_mask_plane("CUSTOM_ARTIFACT", "a plane beyond the standard ones")
    visit = VisitInfo(
        instrument="MegaPrime",
        exposure_id=1234567,
        visit_id=1234567,
        detector=17,
        detector_name="ccd17",
        detector_serial="8434-21-3",
        physical_filter="i.MP9702",
        band="i",
        mjd=57000.123456789012,
        exposure_time=300.0000000001,
        dark_time=301.5,
        airmass=1.2345678901234567,
        observation_type="science",
        boresight_ra=150.12345678901234,
        boresight_dec=2.2345678901234567,
        observatory_longitude=-155.468876,
        observatory_latitude=19.825252,
        observatory_elevation=4215.0,
        air_temperature=1.5,
        air_pressure=61500.0,
        humidity=12.25,
    )
    polygon = ValidPolygon(
        [[box.x0 + 3.25, box.y0 + 1.5], [box.x1 - 2.125, box.y0 + 4.0], [box.x1 - 5.0, box.y1 - 1.0 / 3.0], [box.x0 + 0.1, box.y1]]
    )
    metadata = {
        "SEEING": 0.7123456789012345,
        "NCOMBINE": 7,
        "FLAG": True,
        "OBSERVER": "somebody",
        "a long lower-case key": -1.0e-300,
        "nested": {"list": [1, 2.5, None, "x", [True, False]], "nan": float("nan"), "deep": {"k": "v"}},
        "empty": {},
    }
    return Exposure(
        mi,
        wcs=make_sip_wcs(),
        psf=GaussianPsf(2.123456789) if psf is None else psf,
        photo_calib=PhotoCalib(1.0 / 3.0, 0.0123456789),
        visit_info=visit,
        valid_polygon=polygon,
        metadata=metadata,
    )


@pytest.fixture
def exposure_factory() -> Any:
    """``make_exposure(box=None, psf=None, seed=0, extra_plane=True)``."""
    return make_exposure


@pytest.fixture
def sip_wcs() -> Any:
    return make_sip_wcs()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A throwaway local Prefect server (SQLite) shared by the flow tests of one worker."""
    from flows.prefect_env import apply_embedded_defaults

    apply_embedded_defaults("WARNING")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield

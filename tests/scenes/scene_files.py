"""Synthetic Sentinel-2 L2A scenes in each form `predict` reads (an L2A product with JP2 bands, a folder of
per-band COGs, a STAC item), on real Sentinel-2 grids (UTM 33N, origin 300000 / 5300040, 10 / 20 / 60 m).
A module of its own, not conftest: `from conftest import` finds whichever conftest loaded first."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.transform import Affine, from_origin

from simclr_s2.bigearthnet.bands import BANDS, RESOLUTION_M
from simclr_s2.scenes.product import native_resolution

CRS = "EPSG:32633"
ORIGIN = (300000.0, 5300040.0)
SIDE = 480  # 10 m pixels: 4 x 4 windows
CLEAR, CLOUD = 4, 9  # SCL: vegetation, cloud high probability
Bands = dict[str, np.ndarray]


def scene_bands(seed: int = 0, side: int = SIDE, offset: int = 0) -> Bands:
    """Every band at its native resolution (uint16 DN + `offset`) and SCL at 20 m, all clear."""
    rng = np.random.default_rng(seed)
    bands = {b: (rng.integers(100, 4000, (side * 10 // RESOLUTION_M[b],) * 2) + offset).astype(np.uint16)
             for b in BANDS}
    return {**bands, "SCL": np.full((side // 2, side // 2), CLEAR, np.uint8)}


def write_raster(path: Path, array: np.ndarray, resolution: float, driver: str = "COG", crs: str | None = CRS,
                 transform: Affine | None = None, **options: object) -> Path:
    """`array` as one band, north-up from ORIGIN at `resolution` unless `transform` says otherwise."""
    profile = {"driver": "GTiff" if driver == "COG" else driver, "width": array.shape[1], "height": array.shape[0],
               "count": 1, "dtype": array.dtype, "crs": crs,
               "transform": transform or from_origin(*ORIGIN, resolution, resolution)}
    with rasterio.open(path, "w", **profile, **options) as dataset:
        dataset.write(array, 1)
    if driver == "COG":
        rasterio.shutil.copy(path, path.with_suffix(".cog"), driver="COG")
        path.with_suffix(".cog").replace(path)
    return path


def write_folder(folder: Path, bands: Bands) -> Path:
    """A folder of per-band COGs: B02.tif ... SCL.tif."""
    folder.mkdir(parents=True)
    for band, array in bands.items():
        write_raster(folder / f"{band}.tif", array, native_resolution(band))
    return folder


MTD = """<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-{level}_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level}.xsd">
<n1:General_Info><Product_Info><PRODUCT_URI>{name}</PRODUCT_URI><PROCESSING_LEVEL>Level-{level}</PROCESSING_LEVEL>
<PRODUCT_TYPE>S2MSI{level}</PRODUCT_TYPE><PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE></Product_Info>
<Product_Image_Characteristics><Spectral_Information_List>{spectral}</Spectral_Information_List>
{offsets}</Product_Image_Characteristics></n1:General_Info></n1:Level-{level}_User_Product>
"""
PHYSICAL = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


def write_safe(root: Path, bands: Bands, *, baseline: str = "05.09", offset: int | None = -1000,
               level: str = "2A") -> Path:
    """An L2A product folder: MTD_MSIL2A.xml (BOA_ADD_OFFSET = `offset` for every band, none when None) and
    lossless JP2 bands at their native resolutions under GRANULE/*/IMG_DATA/R10m|R20m|R60m."""
    name = f"S2A_MSIL{level}_20230601T100559_N{baseline.replace('.', '')}_R022_T33UUP_20230601T134523.SAFE"
    folder = root / name
    spectral = "".join(f'<Spectral_Information bandId="{i}" physicalBand="{b}"/>' for i, b in enumerate(PHYSICAL))
    offsets = "" if offset is None else "<BOA_ADD_OFFSET_VALUES_LIST>" + "".join(
        f'<BOA_ADD_OFFSET band_id="{i}">{offset}</BOA_ADD_OFFSET>' for i in range(13)) + "</BOA_ADD_OFFSET_VALUES_LIST>"
    folder.mkdir(parents=True)
    (folder / f"MTD_MSIL{level}.xml").write_text(MTD.format(level=level, name=name, baseline=baseline,
                                                            spectral=spectral, offsets=offsets))
    images = folder / "GRANULE" / "L2A_T33UUP_A041234_20230601T100559" / "IMG_DATA"
    for band, array in bands.items():
        resolution = native_resolution(band)
        (images / f"R{resolution}m").mkdir(parents=True, exist_ok=True)
        write_raster(images / f"R{resolution}m" / f"T33UUP_20230601T100559_{band}_{resolution}m.jp2", array,
                     resolution, driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    # what an L2A product also holds: B02 resampled to 20 m, which is not the band's native file
    write_raster(images / "R20m" / "T33UUP_20230601T100559_B02_20m.jp2", bands["B02"][::2, ::2], 20,
                 driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    return folder


def write_stac(folder: Path, bands: Bands, *, baseline: str = "05.09", raster_offset: float | None = None,
               keys: Callable[[str], str] = str) -> Path:
    """A STAC item whose assets (keyed by `keys(band)`) are per-band COGs beside it."""
    write_folder(folder / "assets", bands)
    raster = {} if raster_offset is None else {"raster:bands": [{"scale": 0.0001, "offset": raster_offset}]}
    assets = {keys(b): {"href": f"assets/{b}.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                        **({} if b == "SCL" else raster)} for b in bands}
    east, north = ORIGIN
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "S2A_33UUP_20230601_0_L2A",
            "geometry": {"type": "Polygon", "coordinates": [[[14.0, 47.8], [14.1, 47.8], [14.1, 47.7], [14.0, 47.8]]]},
            "bbox": [east, north - SIDE * 10, east + SIDE * 10, north],
            "properties": {"datetime": "2023-06-01T10:05:59Z", "s2:processing_baseline": baseline,
                           "s2:product_type": "S2MSI2A"}, "links": [], "assets": assets,
            "stac_extensions": ["https://stac-extensions.github.io/raster/v1.1.0/schema.json"]}
    path = folder / "item.json"
    path.write_text(json.dumps(item))
    return path

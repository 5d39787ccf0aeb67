"""The maps of a scene: irrigation probability (float32, NaN where there is none) and the binary map at the
threshold (uint8: 1 irrigated, 0 not, 255 no data) on one grid, written top to bottom as their rows become
final into tiled GeoTIFFs, then copied into Cloud Optimized GeoTIFFs (GDAL's COG driver reads the source
block by block: memory stays bounded); a PNG quicklook; the area figures of the summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from matplotlib import colormaps
from matplotlib.image import imsave
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.windows import Window

PROBABILITY = "probability.tif"
IRRIGATED = "irrigated.tif"
QUICKLOOK = "quicklook.png"
SUMMARY = "summary.json"
NODATA = 255  # the binary map's
PIXEL_HA = 0.01  # a 10 m pixel
QUICKLOOK_SIDE = (256, 1024)  # the quicklook's longer side: at least, at most (px)
_OVERVIEWS = {PROBABILITY: "AVERAGE", IRRIGATED: "NEAREST"}


class MapWriter:
    """Both maps on one grid, `write` giving rows of probability from the top down; `finish` closes them and
    writes the COGs; `close` (on an error) drops what was written."""

    def __init__(self, folder: Path, crs: CRS, transform: Affine, width: int, height: int, threshold: float) -> None:
        self.folder, self.threshold, self.width, self.height = folder, threshold, width, height
        profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "crs": crs,
                   "transform": transform, "tiled": True, "blockxsize": 512, "blockysize": 512, "BIGTIFF": "IF_SAFER"}
        self.files = {PROBABILITY: rasterio.open(self._draft(PROBABILITY), "w", **profile, dtype="float32",
                                                 nodata=float("nan")),
                      IRRIGATED: rasterio.open(self._draft(IRRIGATED), "w", **profile, dtype="uint8", nodata=NODATA)}

    def _draft(self, name: str) -> Path:
        return self.folder / f".{name}.draft.tif"

    def write(self, row: int, probability: np.ndarray) -> None:
        """Rows `row`.. of the maps from float32 (n, width) probabilities, NaN where none."""
        window = Window(0, row, self.width, len(probability))
        irrigated = np.where(np.isnan(probability), NODATA, probability >= self.threshold).astype(np.uint8)
        self.files[PROBABILITY].write(probability.astype(np.float32), 1, window=window)
        self.files[IRRIGATED].write(irrigated, 1, window=window)

    def finish(self) -> list[Path]:
        """The COGs, deflate-compressed with overviews (averaged probability, nearest class)."""
        self.close()
        paths = []
        for name, resampling in _OVERVIEWS.items():
            path = self.folder / name
            rasterio.shutil.copy(self._draft(name), path, driver="COG", compress="DEFLATE",
                                 overview_resampling=resampling, blocksize=512)
            self._draft(name).unlink()
            paths.append(path)
        return paths

    def close(self) -> None:
        for dataset in self.files.values():
            dataset.close()


def write_quicklook(probability: Path, path: Path) -> Path:
    """A PNG of the probability map (YlGnBu, transparent where there is none), its longer side scaled into
    QUICKLOOK_SIDE; read from the COG's overviews, so it costs little for any scene size."""
    with rasterio.open(probability) as dataset:
        low, high = QUICKLOOK_SIDE
        scale = min(max(max(dataset.shape), low), high) / max(dataset.shape)
        shape = tuple(max(1, round(side * scale)) for side in dataset.shape)
        values = dataset.read(1, out_shape=shape, resampling=Resampling.nearest)
    rgba = colormaps["YlGnBu"](np.nan_to_num(values), bytes=True)
    rgba[np.isnan(values), 3] = 0
    imsave(path, rgba)
    return path


@dataclass
class Tally:
    """10 m pixels of the scene: all, masked by SCL, with a probability (scored), irrigated at the threshold."""

    threshold: float
    pixels: int = 0
    masked: int = 0
    scored: int = 0
    irrigated: int = 0

    def add(self, probability: np.ndarray, masked: np.ndarray) -> None:
        scored = ~np.isnan(probability)
        self.pixels += probability.size
        self.masked += int(masked.sum())
        self.scored += int(scored.sum())
        self.irrigated += int((probability[scored] >= self.threshold).sum())

    def areas(self) -> dict[str, float]:
        """Hectares and shares: irrigated_share is of the scored area, the other shares of the scene's."""
        def ha(n: int) -> float:
            return round(n * PIXEL_HA, 2)

        def share(n: int, of: int) -> float:
            return round(n / of, 6) if of else 0.0

        return {"scene_ha": ha(self.pixels),
                "masked_ha": ha(self.masked), "masked_share": share(self.masked, self.pixels),
                "scored_ha": ha(self.scored), "scored_share": share(self.scored, self.pixels),
                "irrigated_ha": ha(self.irrigated), "irrigated_share": share(self.irrigated, self.scored)}

"""From a classifier of 1.2 km patches to a map of a Sentinel-2 scene: reading L2A products in the forms they
come in (product.py, safe.py, stac.py), cutting them into patch-sized windows with the archive's radiometry
and resampling (windows.py), scoring the windows (inference.py) and writing the maps (maps.py)."""

"""Raster files with GDAL: reading, bands, labelled rasters, GeoTIFF writing, output files, QML."""

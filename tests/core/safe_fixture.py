"""A miniature Sentinel-2 ``.SAFE`` product (L1C or L2A) that GDAL's SENTINEL2 driver opens.

The product is GENERATED. Its pixel values are REAL: the 12-band L2A BigEarthNet patch
``sample_data/s2/S2A_MSIL2A_20170613T101031_87_48_L2A12.tif`` (120 x 120 px at 10 m, UTM 33N, bands
B1..B12 with B8A, no B10), and so is its georeference (the tile's upper-left corner is the patch's, the
10/20/60 m grids are 120/60/20 px). B2, B3, B4, B8 are the patch's values; the 20 m bands (B5, B6, B7,
B8A, B11, B12) are its values averaged over 2 x 2 pixels and the 60 m bands (B1, B9) over 6 x 6 (the
patch's 20 m and 60 m bands are already constant over such blocks, so the averages are exactly the
original values). INVENTED are all identifiers and dates of the metadata: the product and tile names
(tile T33UUP, relative orbit R022, absolute orbit A010271), the generation times, the processing
baselines (02.05 for the L1C, 04.00 for the L2A) and the L2A's BOA_ADD_OFFSET = -1000 (its DNs are
the patch's + 1000, so that they mean the same reflectance). The L1C has no B10 (the patch has none):
its granule lists 12 band files. The sensing time 2017-06-13T10:10:31 is the one in the patch's name.

The XML holds only what the SENTINEL2 driver of GDAL 3.6 reads (after the driver's autotest data,
OSGeo/gdal autotest/gdrivers/data/sentinel2): the user-product MTD (product info, granule list with
IMAGE_FILE entries, special values, quantification / offset values, spectral information with the
resolutions) and the granule's MTD_TL.xml (EPSG code, sizes and upper-left corners per resolution).
Band files are lossless JPEG 2000 (GDAL's JP2OpenJPEG driver, REVERSIBLE=YES), as ESA writes them.
"""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "s2" / "S2A_MSIL2A_20170613T101031_87_48_L2A12.tif"
TILE = "T33UUP"
SENSING = "20170613T101031"
START_TIME = "2017-06-13T10:10:31.026Z"
RESOLUTION = {"B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B8A": 20,
              "B9": 60, "B10": 60, "B11": 20, "B12": 20}
BAND_ORDER = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
WAVELENGTH = {"B1": (433, 453, 443), "B2": (458, 523, 490), "B3": (543, 578, 560), "B4": (650, 680, 665),
              "B5": (698, 713, 705), "B6": (733, 748, 740), "B7": (773, 793, 783), "B8": (785, 900, 842),
              "B8A": (855, 875, 865), "B9": (935, 955, 945), "B10": (1360, 1390, 1375),
              "B11": (1565, 1655, 1610), "B12": (2100, 2280, 2190)}
# Bands ESA stores per resolution folder of an L2A product (those of the sample only: no TCI/AOT/WVP/SCL).
L2A_FOLDERS = {10: ("B2", "B3", "B4", "B8"), 20: ("B2", "B3", "B4", "B5", "B6", "B7", "B8A", "B11", "B12"),
               60: ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8A", "B9", "B11", "B12")}


def file_band(band: str) -> str:
    """ESA's file-name spelling: B2 -> B02, B8A -> B8A."""
    return band if band == "B8A" else f"B{int(band[1:]):02d}"


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    h, w = a.shape
    return np.rint(a.reshape(h // k, k, w // k, k).astype(np.float64).mean(axis=(1, 3))).astype(np.uint16)


def sample_bands() -> Dict[str, np.ndarray]:
    """The sample's bands at their native Sentinel-2 resolution (10 m as is, 20 m 2x2-, 60 m 6x6-averaged)."""
    import rasterio

    with rasterio.open(SAMPLE) as src:
        data = {d: src.read(i + 1) for i, d in enumerate(src.descriptions)}
    return {b: block_mean(a, RESOLUTION[b] // 10) if RESOLUTION[b] > 10 else a for b, a in data.items()}


def sample_georef():
    import rasterio

    with rasterio.open(SAMPLE) as src:
        return src.transform, src.crs, src.width, src.height


def _write_jp2(path: Path, data: np.ndarray, ulx: float, uly: float, res: float, epsg: int) -> None:
    from osgeo import gdal, osr

    path.parent.mkdir(parents=True, exist_ok=True)
    mem = gdal.GetDriverByName("MEM").Create("", data.shape[1], data.shape[0], 1, gdal.GDT_UInt16)
    mem.SetGeoTransform((ulx, res, 0.0, uly, 0.0, -res))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    mem.SetProjection(srs.ExportToWkt())
    mem.GetRasterBand(1).WriteArray(data)
    driver = gdal.GetDriverByName("JP2OpenJPEG")
    if driver is None:
        raise RuntimeError("GDAL has no JP2OpenJPEG driver: cannot write the miniature SAFE's band files")
    out = driver.CreateCopy(str(path), mem, options=["REVERSIBLE=YES", "QUALITY=100", "YCBCR420=NO"])
    if out is None:
        raise RuntimeError(f"GDAL could not write {path}")
    del out   # closes the file


def _spectral_info() -> str:
    items = []
    for i, b in enumerate(BAND_ORDER):
        lo, hi, c = WAVELENGTH[b]
        items.append(f"""        <Spectral_Information bandId="{i}" physicalBand="{b}">
          <RESOLUTION>{RESOLUTION[b]}</RESOLUTION>
          <Wavelength><MIN unit="nm">{lo}</MIN><MAX unit="nm">{hi}</MAX><CENTRAL unit="nm">{c}</CENTRAL></Wavelength>
        </Spectral_Information>""")
    return "\n".join(items)


def _tile_xml(level: str, tile_id: str, ulx: float, uly: float, epsg: int, size10: int) -> str:
    sizes = "\n".join(f"""      <Size resolution="{r}"><NROWS>{size10 * 10 // r}</NROWS>"""
                      f"""<NCOLS>{size10 * 10 // r}</NCOLS></Size>"""
                      for r in (10, 20, 60))
    geopos = "\n".join(f"""      <Geoposition resolution="{r}"><ULX>{ulx:.0f}</ULX><ULY>{uly:.0f}</ULY>"""
                       f"""<XDIM>{r}</XDIM><YDIM>-{r}</YDIM></Geoposition>"""
                       for r in (10, 20, 60))
    root = "Level-1C_Tile_ID" if level == "L1C" else "Level-2A_Tile_ID"
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{root} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_{level[:2]}-{level[1:]}_Tile_Metadata.xsd">
  <n1:General_Info>
    <TILE_ID metadataLevel="Brief">{tile_id}</TILE_ID>
    <SENSING_TIME metadataLevel="Standard">{START_TIME}</SENSING_TIME>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>WGS84 / UTM zone {epsg - 32600}N</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{epsg}</HORIZONTAL_CS_CODE>
{sizes}
{geopos}
    </Tile_Geocoding>
  </n1:Geometric_Info>
</n1:{root}>
"""


def _product_xml(level: str, product_uri: str, baseline: str, granule_list, datastrip_id: str,
                 offset: Optional[int], generated: str) -> str:
    granules = "\n".join(
        f"""          <Granule datastripIdentifier="{datastrip_id}" granuleIdentifier="{gid}" """
        """imageFormat="JPEG2000">\n"""
        + "\n".join(f"            <IMAGE_FILE>{f}</IMAGE_FILE>" for f in files) + "\n          </Granule>"
        for gid, files in granule_list)
    if level == "L1C":
        quant = '<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>'
        offsets = ("<Radiometric_Offset_List>" + "".join(
            f'<RADIO_ADD_OFFSET band_id="{i}">{offset}</RADIO_ADD_OFFSET>' for i in range(13))
            + "</Radiometric_Offset_List>") if offset is not None else ""
    else:
        quant = ('<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>'
                 '<AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>'
                 '<WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>')
        offsets = ("<BOA_ADD_OFFSET_VALUES_LIST>" + "".join(
            f'<BOA_ADD_OFFSET band_id="{i}">{offset}</BOA_ADD_OFFSET>' for i in range(13))
            + "</BOA_ADD_OFFSET_VALUES_LIST>") if offset is not None else ""
    root = "Level-1C_User_Product" if level == "L1C" else "Level-2A_User_Product"
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{root} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level[1:]}.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{START_TIME}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{START_TIME}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{product_uri}</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-{level[1:]}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <GENERATION_TIME>{generated}</GENERATION_TIME>
      <Datatake datatakeIdentifier="GS2A_{SENSING}_010271_N{baseline}">
        <SPACECRAFT_NAME>Sentinel-2A</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{START_TIME}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>22</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
      <Query_Options completeSingleTile="true"><PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT></Query_Options>
      <Product_Organisation>
        <Granule_List>
{granules}
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
  </n1:General_Info>
  <n1:Product_Image_Characteristics>
    <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
    <Special_Values><SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX></Special_Values>
    {quant}
    {offsets}
    <Spectral_Information_List>
{_spectral_info()}
    </Spectral_Information_List>
  </n1:Product_Image_Characteristics>
</n1:{root}>
"""


# The invented second granule of ``make_safe(second_zone=True)``: a tile in UTM 34N holding the same pixels.
SECOND_TILE = ("T34UCA", 32634, 300000.0, 5400000.0)


def make_safe(folder: Path, level: str = "L1C", second_zone: bool = False) -> Path:
    """Write the miniature product into ``folder``; returns the ``.SAFE`` directory.

    L1C: baseline 02.05, no offset, DNs = the sample's. L2A: baseline 04.00, BOA_ADD_OFFSET = -1000,
    DNs = the sample's + 1000. ``second_zone``: a second granule (INVENTED: tile T34UCA in UTM 34N, the
    same pixels at another place), so that the product spans two UTM zones as products at a zone border do.
    """
    level = level.upper()
    if level not in ("L1C", "L2A"):
        raise ValueError(level)
    transform, crs, width, _height = sample_georef()
    granules = [(TILE, int(crs.to_epsg()), transform.c, transform.f)]
    if second_zone:
        granules.append(SECOND_TILE)
    bands = sample_bands()
    baseline, offset, shift = ("02.05", None, 0) if level == "L1C" else ("04.00", -1000, 1000)
    gen = "20170613T101032" if level == "L1C" else "20220125T120000"
    product_uri = f"S2A_MSI{level}_{SENSING}_N{baseline.replace('.', '')}_R022_{TILE}_{gen}.SAFE"
    safe = Path(folder) / (product_uri if not second_zone else product_uri.replace(".SAFE", "_2ZONES.SAFE"))
    if safe.exists():
        shutil.rmtree(safe)
    datastrip_id = f"S2A_OPER_MSI_{level}_DS_SGS__{gen}_S{SENSING}_N{baseline}"
    granule_list = []
    for tile, epsg, ulx, uly in granules:
        granule_dir = f"{level}_{tile}_A010271_{SENSING}"
        granule_id = f"S2A_OPER_MSI_{level}_TL_SGS__{gen}_A010271_{tile}_N{baseline}"
        image_files = []
        if level == "L1C":
            for b in BAND_ORDER:
                if b not in bands:
                    continue   # B10: not in the sample
                rel = f"GRANULE/{granule_dir}/IMG_DATA/{tile}_{SENSING}_{file_band(b)}"
                _write_jp2(safe / (rel + ".jp2"), bands[b], ulx, uly, RESOLUTION[b], epsg)
                image_files.append(rel)
        else:
            for res, names in L2A_FOLDERS.items():
                for b in names:
                    full = _full_10m(b)   # every band of a folder is the sample's band averaged to it
                    data = block_mean(full, res // 10) if res > 10 else full
                    rel = f"GRANULE/{granule_dir}/IMG_DATA/R{res}m/{tile}_{SENSING}_{file_band(b)}_{res}m"
                    _write_jp2(safe / (rel + ".jp2"), data + np.uint16(shift), ulx, uly, res, epsg)
                    image_files.append(rel)
        (safe / "GRANULE" / granule_dir).mkdir(parents=True, exist_ok=True)
        (safe / "GRANULE" / granule_dir / "MTD_TL.xml").write_text(
            _tile_xml(level, granule_id, ulx, uly, epsg, width), encoding="utf-8")
        granule_list.append((granule_id, image_files))
    (safe / f"MTD_MSI{level}.xml").write_text(
        _product_xml(level, product_uri, baseline, granule_list, datastrip_id, offset,
                     f"{gen[:4]}-{gen[4:6]}-{gen[6:8]}T{gen[9:11]}:{gen[11:13]}:{gen[13:15]}.000000Z"),
        encoding="utf-8")
    return safe


_FULL_CACHE: Dict[str, np.ndarray] = {}


def _full_10m(band: str) -> np.ndarray:
    """A band of the sample on its 10 m grid (for the L2A's coarser copies of a band, e.g. R20m/B02)."""
    if not _FULL_CACHE:
        import rasterio

        with rasterio.open(SAMPLE) as src:
            _FULL_CACHE.update({d: src.read(i + 1) for i, d in enumerate(src.descriptions)})
    return _FULL_CACHE[band]


def zip_safe(safe: Path, zip_path: Optional[Path] = None) -> Path:
    """Zip a ``.SAFE`` folder as ESA's hub delivers it (the folder itself at the root of the archive)."""
    safe = Path(safe)
    zip_path = Path(zip_path) if zip_path else safe.with_suffix(".zip")
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(safe.rglob("*")):
            zf.write(f, f.relative_to(safe.parent).as_posix())
    return zip_path

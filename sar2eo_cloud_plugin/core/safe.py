"""Sentinel-2 products as users download them, turned into one band stack the cloud mask can read.

Accepted as a product (anything else is not one: :func:`product_stack` returns None without opening it):

* a ``.SAFE`` folder (L1C or L2A; the compact naming of 2016 on, ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``,
  and the older ``S2?_OPER_MTD_SAFL1C_*.xml`` / ``S2?_USER_MTD_SAFL2A_*.xml``),
* its ``.zip`` as the Copernicus hubs deliver it (read in place through ``/vsizip/``, not unpacked),
* the product metadata file inside (``MTD_MSIL1C.xml``, ``MTD_MSIL2A.xml``, or the older names),
* a GDAL SENTINEL2 subdataset string, ``SENTINEL2_L1C:/path/MTD_MSIL1C.xml:10m:EPSG_32633`` (also
  ``SENTINEL2_L2A:``, ``/vsizip/`` paths, the 20m/60m/TCI subdatasets): the whole product it names is
  stacked, not only that resolution; its EPSG picks the UTM zone.

How the stack is built: GDAL's SENTINEL2 driver reads the product metadata and exposes one subdataset
per resolution and UTM zone; each is a virtual raster over the band files (JPEG 2000, a mosaic of the
granules for old multi-tile products). The driver's virtual rasters of the 10 m and the 20 m subdataset
are taken apart and their band sources written into ONE VRT on the 10 m grid (nothing is decoded or
copied): B2, B3, B4, B8 as they are, B5, B6, B7, B8A, B11, B12 of the 20 m subdataset resampled to 10 m
by **nearest neighbour** — each 20 m DN is repeated over the 2 x 2 pixels of 10 m it covers. Nearest
because the factor is exactly 2 on aligned grids: the DNs stay the product's own, nodata 0 does not bleed
into valid pixels at swath and tile edges as bilinear would make it (giving fringe values that are
neither nodata nor a measurement), and it is how the plugin's sample stacks were made
(``scripts/make_sample_data.py``), so a product and its GeoTIFF stack give the same mask. The 60 m
bands (B1, B9, B10) are left out; no cloud model here uses them. Bands are in spectral order, each
described by its plain name ("B2", ..., "B8A", "B11", "B12"), nodata 0. The VRT's metadata carries what
the product's metadata says: ``PROCESSING_LEVEL`` (``L1C`` or ``L2A``; the driver says ``Level-1C``),
``PRODUCT_TYPE``, ``PRODUCT_START_TIME`` (the acquisition), ``PROCESSING_BASELINE``, ``PRODUCT_URI``
and, for baseline 04.00 and later, ``RADIO_ADD_OFFSET`` (L1C) / ``BOA_ADD_OFFSET`` (L2A). GDAL 3.6 does
not expose the offsets (they are read here from the product XML, the driver's ``xml:SENTINEL2``
metadata domain); when the stacked bands disagree, each band carries its own.

No QGIS here; ``osgeo.gdal`` (the one QGIS ships) opens the product, and the VRT it writes references
the band files by absolute path, so any GDAL with a JPEG 2000 driver (rasterio's too) reads it.
"""
from __future__ import annotations

import hashlib
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .errors import InputError

Log = Callable[[str], None]

BANDS_10M: Tuple[str, ...] = ("B2", "B3", "B4", "B8")
BANDS_20M: Tuple[str, ...] = ("B5", "B6", "B7", "B8A", "B11", "B12")
STACK_ORDER: Tuple[str, ...] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
# band_id of the product metadata (RADIO_ADD_OFFSET / BOA_ADD_OFFSET) -> band name
BAND_IDS: Tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
RESAMPLING = "nearest"
NODATA = 0

_SUBDATASET = re.compile(r"^SENTINEL2_(L1C|L2A)(_TILE)?:(.+)$", re.IGNORECASE)
_MTD_NAME = re.compile(r"^(MTD_MSIL(1C|2A)|S2[A-D]_(OPER|USER)_MTD_SAFL(1C|2A)_.*)\.xml$", re.IGNORECASE)
_EPSG = re.compile(r"^EPSG_\d+$", re.IGNORECASE)
_OFFSET_KEYS = ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET")


def _is_mtd_name(name: str) -> bool:
    return bool(_MTD_NAME.match(name))


# --------------------------------------------------------------------------------- what the path is
def _locate(path: str) -> Optional[Tuple[str, Optional[str], Optional[str]]]:
    """(product metadata path GDAL opens, EPSG_xxxxx asked for or None, the subdataset string or None),
    or None when ``path`` is not a Sentinel-2 product. Only names and directory listings are looked at."""
    text = str(path).strip()
    match = _SUBDATASET.match(text)
    if match:
        rest = match.group(3)
        parts = rest.rsplit(":", 2)
        epsg = parts[2] if len(parts) == 3 and _EPSG.match(parts[2]) else None
        mtd = parts[0] if epsg else rest.rsplit(":", 1)[0]
        if not mtd.startswith("/vsi") and not os.path.isabs(mtd):   # the VRT must not depend on the cwd
            absolute = os.path.abspath(mtd)
            text = text[:match.start(3)] + absolute + rest[len(mtd):]
            mtd = absolute
        if match.group(2):            # an old product's single tile: only that subdataset
            return text, None, text
        return mtd, epsg.upper() if epsg else None, text
    p = Path(text)
    if text.lower().startswith("/vsizip/"):
        return (text, None, None) if _is_mtd_name(p.name) else None
    if p.is_dir():
        found = sorted(f.name for f in p.iterdir() if f.is_file() and _is_mtd_name(f.name))
        if not found:
            return None
        compact = [n for n in found if n.upper().startswith("MTD_MSIL")]
        return os.path.abspath(p / (compact or found)[0]), None, None
    if p.suffix.lower() == ".xml":
        return (os.path.abspath(text), None, None) if _is_mtd_name(p.name) and p.is_file() else None
    if p.suffix.lower() == ".zip" and p.is_file():
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"'{text}' is not a readable zip archive ({exc}); a Sentinel-2 product downloaded "
                             "as .zip may be incomplete: download it again, or unpack it and give the .SAFE "
                             "folder.") from exc
        members = [n for n in names if _is_mtd_name(n.rstrip("/").rsplit("/", 1)[-1]) and n.count("/") <= 1]
        if not members:
            return None
        members.sort(key=lambda n: (not n.rsplit("/", 1)[-1].upper().startswith("MTD_MSIL"), n))
        return f"/vsizip/{p.resolve().as_posix()}/{members[0]}", None, None
    return None


def is_product(path: str) -> bool:
    """Whether ``path`` names a Sentinel-2 product (.SAFE folder, zip, MTD xml, SENTINEL2 subdataset).
    Looks only at names and listings; a zip that cannot be read raises :class:`InputError`."""
    return _locate(path) is not None


# ------------------------------------------------------------------------------------- the product
def _gdal():
    from osgeo import gdal

    return gdal


def _open(gdal, name: str, shown: str):
    """gdal.Open without touching the process-wide exception mode (QGIS and other plugins share it)."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")   # the driver warns about every absent TCI/QI file
    gdal.ErrorReset()
    try:
        ds = gdal.Open(name)
    except RuntimeError as exc:      # gdal.UseExceptions() is on in this process
        raise InputError(f"GDAL cannot read the Sentinel-2 product '{shown}': {exc}") from exc
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        why = gdal.GetLastErrorMsg()
        raise InputError(f"GDAL cannot read the Sentinel-2 product '{shown}'" + (f": {why}" if why else "."))
    return ds


def _subdatasets(ds) -> List[Tuple[str, str, str]]:
    """(name, resolution, EPSG_xxxxx) of every subdataset of an opened product."""
    items = ds.GetMetadata("SUBDATASETS") or {}
    out = []
    for key in sorted((k for k in items if k.endswith("_NAME")), key=lambda k: int(re.findall(r"\d+", k)[0])):
        name = items[key]
        parts = name.rsplit(":", 2)
        if len(parts) == 3:
            out.append((name, parts[1], parts[2].upper()))
    return out


def _offsets_from_xml(xml_text: str) -> Dict[str, Dict[str, str]]:
    """{"BOA_ADD_OFFSET": {"B2": "-1000", ...}} from the product metadata (baseline 04.00 and later)."""
    found: Dict[str, Dict[str, str]] = {}
    if not xml_text:
        return found
    try:
        root = ET.fromstring(xml_text.encode("utf-8") if isinstance(xml_text, str) else xml_text)
    except ET.ParseError:
        return found
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        text = (el.text or "").strip()
        if tag in _OFFSET_KEYS and text:
            band_id = el.get("band_id", el.get("bandId"))
            try:
                band = BAND_IDS[int(band_id or "")]
            except (ValueError, IndexError):
                continue
            found.setdefault(tag, {})[band] = text
    return found


def _level(meta: Dict[str, str], fallback: str) -> str:
    text = " ".join(str(meta.get(k, "")) for k in ("PROCESSING_LEVEL", "PRODUCT_TYPE")).upper()
    if "1C" in text:
        return "L1C"
    if "2A" in text:
        return "L2A"
    return fallback


def _band_name(band_el) -> Optional[str]:
    from .bands import canonical_s2_band

    for mdi in band_el.iter("MDI"):
        if mdi.get("key") == "BANDNAME":
            return canonical_s2_band(mdi.text)
    desc = band_el.find("Description")
    return canonical_s2_band(desc.text if desc is not None else None)


Grid = Tuple[Tuple[float, ...], int, int, Dict[str, ET.Element], Optional[ET.Element]]


def _vrt_bands(sub) -> Grid:
    """(geotransform, width, height, {band name: its VRTRasterBand element}, SRS element) of a driver
    subdataset."""
    xml = (sub.GetMetadata("xml:VRT") or [""])[0]
    if not xml:
        raise InputError("GDAL's SENTINEL2 driver gave no virtual raster for a subdataset of the product.")
    # the driver embeds the product XML (with its own <?xml?> declaration) as metadata: not wanted here
    xml = re.sub(r'<Metadata domain="xml:[^"]*"[^>]*>.*?</Metadata>', "", xml, flags=re.DOTALL)
    root = ET.fromstring(xml)
    bands = {}
    for el in root.findall("VRTRasterBand"):
        name = _band_name(el)
        if name and name not in bands:
            bands[name] = el
    return tuple(sub.GetGeoTransform()), sub.RasterXSize, sub.RasterYSize, bands, root.find("SRS")


def _sources(band_el) -> List[ET.Element]:
    return [c for c in band_el if c.tag.endswith("Source")]


def _fit_source(src: ET.Element, gt_src: Sequence[float], gt_dst: Sequence[float]) -> ET.Element:
    """A copy of a band source, its destination window moved from the source grid to the 10 m grid."""
    el = ET.fromstring(ET.tostring(src))
    fx, fy = gt_src[1] / gt_dst[1], gt_src[5] / gt_dst[5]
    x0, y0 = (gt_src[0] - gt_dst[0]) / gt_dst[1], (gt_src[3] - gt_dst[3]) / gt_dst[5]
    dst = el.find("DstRect")
    if dst is not None and (abs(fx - 1) > 1e-9 or abs(fy - 1) > 1e-9 or abs(x0) > 1e-9 or abs(y0) > 1e-9):
        xo, yo = float(dst.get("xOff", 0)), float(dst.get("yOff", 0))
        xs, ys = float(dst.get("xSize", 0)), float(dst.get("ySize", 0))
        dst.set("xOff", f"{x0 + xo * fx:.10g}")
        dst.set("yOff", f"{y0 + yo * fy:.10g}")
        dst.set("xSize", f"{xs * fx:.10g}")
        dst.set("ySize", f"{ys * fy:.10g}")
        el.set("resampling", RESAMPLING)
    return el


def product_stack(path: str, workdir: str, log: Optional[Log] = None) -> Optional[str]:
    """A VRT in ``workdir`` that stacks the Sentinel-2 product ``path`` on its 10 m grid, or None when
    ``path`` is not a Sentinel-2 product (see the module's docstring for both).

    Raises :class:`InputError` naming ``path`` when GDAL cannot read the product or it lacks a 10 m band.
    """
    log = log or (lambda _m: None)
    located = _locate(path)
    if located is None:
        return None
    mtd, epsg_asked, subdataset = located
    gdal = _gdal()
    shown = str(path)
    try:
        product = _open(gdal, mtd, shown) if not (subdataset and mtd == subdataset) else None
    except InputError:
        if not subdataset:
            raise
        product = None      # the product file is out of reach: what the subdataset alone offers
    if product is not None:
        subs = _subdatasets(product)
        if not subs:
            raise InputError(f"GDAL cannot read the Sentinel-2 product '{shown}': it lists no image "
                             f"subdatasets (driver {product.GetDriver().ShortName}).")
        meta = dict(product.GetMetadata() or {})
        xml_text = (product.GetMetadata("xml:SENTINEL2") or [""])[0]
    else:
        assert subdataset is not None   # for mypy: product is None only where a subdataset was given (above)
        one = _open(gdal, subdataset, shown)
        res = next((q for q in reversed(subdataset.split(":")) if re.match(r"^(\d+m|TCI|PREVIEW)$", q, re.I)), "")
        subs = [(subdataset, res, epsg_asked or "")]
        meta = dict(one.GetMetadata() or {})
        xml_text = (one.GetMetadata("xml:SENTINEL2") or [""])[0]
        one = None
        if mtd != subdataset:
            log(f"Sentinel-2: the product of '{shown}' cannot be opened as a whole; stacking that subdataset only")

    zones = list(dict.fromkeys(z for _n, _r, z in subs if z))
    zone = epsg_asked if epsg_asked in zones else (zones[0] if zones else "")
    if epsg_asked and zones and epsg_asked not in zones:
        log(f"Sentinel-2 product has no {epsg_asked} (it has {', '.join(zones)}): using {zone}")
    if len(zones) > 1:
        why = "the one the subdataset names" if epsg_asked in zones else "the first"
        log(f"Sentinel-2 product spans {len(zones)} UTM zones ({', '.join(zones)}): using {zone}, {why}; "
            "give the subdataset string of another zone (SENTINEL2_...:EPSG_xxxxx) to mask that one")
    by_res = {r: n for n, r, z in subs if z == zone or not z}

    grids: Dict[str, Grid] = {}
    for res in ("10m", "20m"):
        if res in by_res:
            grids[res] = _vrt_bands(_open(gdal, by_res[res], shown))
    if not grids:   # a 60 m or TCI subdataset alone
        res, name = next(iter(by_res.items()))
        grids[res] = _vrt_bands(_open(gdal, name, shown))
    base_res = "10m" if "10m" in grids else next(iter(grids))
    gt, width, height, _b, srs = grids[base_res]

    chosen: List[Tuple[str, ET.Element, Tuple[float, ...]]] = []
    missing = []
    for name in STACK_ORDER:
        home = "10m" if name in BANDS_10M else "20m"
        for res in [home] + [r for r in grids if r != home]:
            if res in grids and name in grids[res][3] and _sources(grids[res][3][name]):
                chosen.append((name, grids[res][3][name], grids[res][0]))
                break
        else:
            missing.append(name)
    if not chosen:
        raise InputError(f"The Sentinel-2 product '{shown}' holds none of the bands {', '.join(STACK_ORDER)} "
                         "(its band files are missing?).")

    level = _level(meta, "L2A" if "2A" in mtd.upper().rsplit("/", 1)[-1] else "L1C")
    offsets = _offsets_from_xml(xml_text)
    tags = {"PROCESSING_LEVEL": level}
    for key in ("PRODUCT_TYPE", "PRODUCT_START_TIME", "PRODUCT_STOP_TIME", "PROCESSING_BASELINE", "PRODUCT_URI",
                "DATATAKE_1_DATATAKE_SENSING_START", "DATATAKE_1_SPACECRAFT_NAME", "GENERATION_TIME",
                "QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE"):
        if meta.get(key):
            tags[key] = str(meta[key])
    band_offsets: Dict[str, Dict[str, str]] = {}
    for key, per_band in offsets.items():
        values = {per_band[n] for n, _e, _g in chosen if n in per_band}
        if len(values) == 1:
            tags[key] = values.pop()
        elif values:
            for n, _e, _g in chosen:
                if n in per_band:
                    band_offsets.setdefault(n, {})[key] = per_band[n]
    tags["SAR2EO_SOURCE"] = shown
    tags["SAR2EO_STACK"] = (f"bands {', '.join(n for n, _e, _g in chosen)} on the {base_res} grid; coarser "
                            f"bands resampled by {RESAMPLING} neighbour")

    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    if srs is not None:
        root.append(srs)
    ET.SubElement(root, "GeoTransform").text = ", ".join(f"{v:.16g}" for v in gt)
    md = ET.SubElement(root, "Metadata")
    for key, value in tags.items():
        ET.SubElement(md, "MDI", key=key).text = value
    for i, (name, band_el, gt_src) in enumerate(chosen, start=1):
        band = ET.SubElement(root, "VRTRasterBand", dataType=band_el.get("dataType", "UInt16"), band=str(i))
        bmd = ET.SubElement(band, "Metadata")
        ET.SubElement(bmd, "MDI", key="BANDNAME").text = name
        for mdi in band_el.iter("MDI"):
            mdi_key = mdi.get("key")
            if mdi_key in ("WAVELENGTH", "WAVELENGTH_UNIT", "BANDWIDTH", "BANDWIDTH_UNIT"):
                ET.SubElement(bmd, "MDI", key=mdi_key).text = mdi.text
        for key, value in band_offsets.get(name, {}).items():
            ET.SubElement(bmd, "MDI", key=key).text = value
        ET.SubElement(band, "Description").text = name
        ET.SubElement(band, "NoDataValue").text = str(NODATA)
        for src in _sources(band_el):
            band.append(_fit_source(src, gt_src, gt))

    Path(workdir).mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", (tags.get("PRODUCT_URI") or Path(mtd).parent.name or "S2")
                  .replace(".SAFE", ""))[:80]
    digest = hashlib.sha1(f"{mtd}|{zone}".encode("utf-8")).hexdigest()[:8]
    out = os.path.join(str(workdir), f"{stem}_{zone or 'stack'}_{digest}.vrt")
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=False)
    log(f"Sentinel-2 {level} product '{Path(shown).name}': stacked {', '.join(n for n, _e, _g in chosen)} on the "
        f"{base_res} grid ({width} x {height} px, {zone or 'its CRS'}), 20 m bands by {RESAMPLING} neighbour"
        + (f"; the product has no {', '.join(missing)}" if missing else ""))
    return out

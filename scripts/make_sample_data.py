"""Stack the real BigEarthNet example patches in ../shared/data into the sample rasters the repo ships.

Each BigEarthNet patch stores one GeoTIFF per band. QGIS users load multi-band
layers, so this writes, unchanged in value:
  sample_data/s1/<S1 patch>_VVVH.tif   2 bands float32 dB: VV, VH
  sample_data/s2/<S2 patch>_L2A12.tif  12 bands uint16 (L2A order B1..B12 with B8A, no B10),
                                       20 m / 60 m bands resampled to the 10 m grid (nearest; no new values)
Band descriptions name the bands. Run: python scripts/make_sample_data.py [--src ../shared/data/bigearthnet-example]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import rasterio
from rasterio.enums import Resampling

S2_FILES = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
S2_NAMES = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]


def stack(files, names, out: Path, dtype: str) -> None:
    with rasterio.open(files[0] if len(files) == 2 else [f for f in files if f.name.endswith("_B02.tif")][0]) as ref:
        profile = ref.profile
        shape = (ref.height, ref.width)
    profile.update(count=len(files), dtype=dtype, tiled=False, compress="deflate", driver="GTiff")
    profile.pop("blockxsize", None), profile.pop("blockysize", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out, "w", **profile) as dst:
        for i, (f, n) in enumerate(zip(files, names), start=1):
            with rasterio.open(f) as src:
                data = src.read(1, out_shape=shape, resampling=Resampling.nearest)
            dst.write(data.astype(dtype), i)
            dst.set_band_description(i, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--src", default=str(root.parent / "shared" / "data" / "bigearthnet-example"))
    ap.add_argument("--out", default=str(root / "sample_data"))
    args = ap.parse_args()
    src, out = Path(args.src), Path(args.out)
    pairs = {}
    for d in sorted((src / "BigEarthNet-S1-Example").iterdir()):
        stack([d / f"{d.name}_VV.tif", d / f"{d.name}_VH.tif"], ["VV (dB)", "VH (dB)"],
              out / "s1" / f"{d.name}_VVVH.tif", "float32")
        meta = json.loads((d / f"{d.name}_labels_metadata.json").read_text())
        pairs[d.name] = meta["corresponding_s2_patch"]
    for d in sorted((src / "BigEarthNet-S2-Example").iterdir()):
        stack([d / f"{d.name}_{b}.tif" for b in S2_FILES], S2_NAMES, out / "s2" / f"{d.name}_L2A12.tif", "uint16")
    (out / "pairs.json").write_text(json.dumps(pairs, indent=2) + "\n")
    print(f"wrote {len(pairs)} S1 and S2 stacks to {out}")


if __name__ == "__main__":
    main()

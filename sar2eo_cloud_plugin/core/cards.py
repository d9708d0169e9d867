"""The model cards this project writes, built in one place.

``training`` fills in the training data and metrics; tests use the same builders
for the small model files they create. Names of bundled models:
``sar2eo_<band set key>`` (e.g. ``sar2eo_rgb``) and ``cloudmask``.
"""
from __future__ import annotations

from typing import Dict, Optional

from . import normalisation as norm
from .bands import BAND_SET_KEYS, S1_BANDS, band_set
from .modelfile import ModelCard
from .tasks import CLOUD_MASK, TRANSLATE


def sar2eo_model_name(band_set_key: str) -> str:
    return TRANSLATE.bundled_model(band_set(band_set_key).key)


CLOUDMASK_MODEL_NAME = CLOUD_MASK.model_name


def experimental_note(card: ModelCard) -> Optional[str]:
    """Why a model is marked experimental (its card's ``metrics.experimental``, written by training's export when
    the model misses its validation target), or None. The help, the dock and the README all say it from here."""
    m = card.metrics or {}
    if not m.get("experimental"):
        return None
    targets = m.get("targets") or {}
    return ("experimental: misses its validation target"
            + (f" ({targets['definition']})" if targets.get("definition") else ""))


def bundled_translation_notes() -> Dict[str, Optional[str]]:
    """Band set key -> :func:`experimental_note` of its bundled translation model (None when it meets its
    target or is not installed). Reads the small JSON cards only."""
    from .modelfile import BUNDLED_DIR, read_card

    out: Dict[str, Optional[str]] = {}
    for key in BAND_SET_KEYS:
        path = BUNDLED_DIR / f"{sar2eo_model_name(key)}.json"
        try:
            out[key] = experimental_note(read_card(path, TRANSLATE.card_task)) if path.is_file() else None
        except Exception:  # noqa: BLE001 - a broken card is reported when the model is used, not in a label
            out[key] = None
    return out


def sar2eo_card(band_set_key: str, ngf: int = 64, n_blocks: int = 9, name: Optional[str] = None,
                tile_size: int = 256, overlap: int = 32) -> ModelCard:
    bs = band_set(band_set_key)
    return ModelCard(
        task=TRANSLATE.card_task,
        name=name or sar2eo_model_name(bs.key),
        architecture="resnet_generator",
        architecture_args={"input_nc": len(S1_BANDS), "output_nc": bs.count, "ngf": ngf, "n_blocks": n_blocks},
        input={"bands": list(S1_BANDS), "units": "dB", "sensor": "Sentinel-1 IW GRD sigma0"},
        normalisation={
            "sar_db_ranges": {k: list(v) for k, v in norm.SAR_DB_RANGES.items()},
            "optical_range": list(norm.OPTICAL_RANGE),
            "scaled_to": [-1, 1],
        },
        output={"bands": list(bs.bands), "band_set": bs.key, "activation": "tanh",
                "written_as": "uint16 reflectance x 10000, nodata 0", "sensor": "Sentinel-2 L2A-like"},
        tiling={"tile_size": tile_size, "overlap": overlap, "batch_size": 4},
    )


def cloudmask_card(encoder_name: str = "efficientnet-b2", name: str = CLOUDMASK_MODEL_NAME, threshold: float = 0.5,
                   tile_size: int = 512, overlap: int = 32, resolution_m: Optional[float] = None) -> ModelCard:
    """The seed's RGB cloud/clear U-Net (docs/model_cards.md): B4, B3, B2 digital numbers clipped at
    4,000 and scaled to 0..1, ImageNet statistics, one sigmoid channel, run at ``resolution_m`` (the
    resolution it was trained at; None: the layer's own)."""
    return ModelCard(
        task=CLOUD_MASK.card_task,
        name=name,
        architecture="unet",
        architecture_args={"encoder_name": encoder_name, "in_channels": 3, "classes": 1},
        input={"bands": ["B4", "B3", "B2"], "units": "dn", "level": "any", "resolution_m": resolution_m,
               "description": "Sentinel-2 digital numbers (reflectance x 10000), L1C or L2A"},
        normalisation={"method": "clip_mean_std", "clip": [norm.CLOUD_CLIP_DN] * 3, "mean": list(norm.IMAGENET_MEAN),
                       "std": list(norm.IMAGENET_STD)},
        output={"classes": [{"value": 1, "name": "cloud"}], "activation": "sigmoid",
                "threshold": threshold, "written_as": "uint8 mask 0 clear / 1 cloud / 255 nodata"},
        tiling={"tile_size": tile_size, "overlap": overlap, "batch_size": 2},
    )

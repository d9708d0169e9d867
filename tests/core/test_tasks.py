"""core/tasks.py: the one table of tasks and devices is consistent with the rest of the core."""
from __future__ import annotations

import pytest

from sar2eo_cloud_plugin.core import cards, cardschema, inference, tasks
from sar2eo_cloud_plugin.core.bands import BAND_SET_KEYS


def test_keys_spellings_and_ids_are_unique_and_stable():
    assert [t.key for t in tasks.TASKS] == ["translate", "cloud_mask"]
    assert [t.card_task for t in tasks.TASKS] == ["sar2eo", "cloudmask"]
    assert [t.algorithm_id for t in tasks.TASKS] == ["sar2eo_cloud:translate_sar_to_eo", "sar2eo_cloud:cloud_mask"]
    assert [t.summary_name for t in tasks.TASKS] == ["sar2eo_batch_translate_summary.json",
                                                     "sar2eo_batch_cloudmask_summary.json"]
    for field in ("key", "card_task", "algorithm", "label", "batch_name", "icon"):
        values = [getattr(t, field) for t in tasks.TASKS]
        assert len(set(values)) == len(values), field


def test_the_core_takes_its_tables_from_tasks():
    assert tuple(cardschema.TASKS) == tasks.CARD_TASKS
    assert cardschema.ARCHITECTURES_BY_TASK == {"sar2eo": ("resnet_generator",), "cloudmask": ("unet",)}
    assert tuple(inference.DEVICES) == tasks.DEVICE_KEYS == ("auto", "cpu", "cuda")
    assert cards.sar2eo_card("rgbn").name == tasks.TRANSLATE.bundled_model("rgbn") == "sar2eo_rgbn"
    assert cards.cloudmask_card().task == tasks.CLOUD_MASK.card_task


def test_bundled_model_names_and_output_suffixes():
    assert tasks.TRANSLATE.bundled_models() == [f"sar2eo_{k}" for k in BAND_SET_KEYS]
    assert tasks.CLOUD_MASK.bundled_model() == "cloudmask"
    assert tasks.TRANSLATE.output_suffix("OUTPUT", "rgb") == "_eo_rgb.tif"
    assert tasks.CLOUD_MASK.all_output_suffixes() == ("_cloudmask.tif", "_cloudprob.tif", "_clouds.gpkg")


def test_device_index_and_unknown_task():
    assert [tasks.device_index(k) for k in ("auto", "cpu", "cuda", "tpu")] == [0, 1, 2, 0]
    assert tasks.task("cloud_mask") is tasks.CLOUD_MASK
    with pytest.raises(ValueError, match="unknown task 'cloudmask'"):
        tasks.task("cloudmask")

"""What every algorithm of the provider promises, checked on all of them at once: each parameter
has help text, the single-scene algorithms are the ones core/tasks.py names, and the tables the
algorithms derive from core/tasks.py (device enum, batch task enum and output names) agree with it."""
from __future__ import annotations

import pytest
from qgis.core import QgsApplication

from sar2eo_cloud_plugin.core import tasks
from sar2eo_cloud_plugin.processing.base import Sar2EoAlgorithm


def algorithms(provider):
    algs = provider.algorithms()
    assert len(algs) >= 3
    return algs


def test_every_parameter_of_every_algorithm_has_help(provider):
    missing = [f"{alg.id()}:{p.name()}" for alg in algorithms(provider) for p in alg.parameterDefinitions()
               if not p.help().strip()]
    assert missing == [], f"parameters without help: {missing}"


def test_python_algorithms_use_the_base_class(provider):
    for alg in algorithms(provider):
        if alg.id().split(":")[1] in {t.algorithm for t in tasks.TASKS} | {"batch_folder"}:
            assert isinstance(alg, Sar2EoAlgorithm), alg.id()
            assert alg.helpUrl() is not None and alg.displayName() and alg.group() and alg.groupId()


@pytest.mark.parametrize("spec", tasks.TASKS, ids=lambda t: t.key)
def test_each_task_has_its_algorithm_with_the_shared_parameters(provider, spec):
    alg = QgsApplication.processingRegistry().algorithmById(spec.algorithm_id)
    assert alg is not None, spec.algorithm_id
    assert alg.provider().id() == tasks.PROVIDER_ID
    names = {p.name() for p in alg.parameterDefinitions()}
    assert {"INPUT", "DEVICE", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "MODEL_FILE"} <= names
    assert set(spec.outputs) <= names, "every batch output suffix belongs to an output parameter"
    assert alg.parameterDefinition("DEVICE").options() == list(tasks.DEVICE_LABELS)


def test_batch_enums_follow_core_tasks(provider):
    batch = QgsApplication.processingRegistry().algorithmById(f"{tasks.PROVIDER_ID}:batch_folder")
    assert batch.parameterDefinition("TASK").options() == [t.batch_label for t in tasks.TASKS]
    assert batch.parameterDefinition("DEVICE").options() == list(tasks.DEVICE_LABELS)
    translate = QgsApplication.processingRegistry().algorithmById(tasks.TRANSLATE.algorithm_id)
    assert batch.parameterDefinition("UNITS").options() == translate.parameterDefinition("UNITS").options()

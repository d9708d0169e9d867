"""Fetch one file over HTTP(S), resumably, and refuse it unless its sha256 is the expected one.

Standard library only (``urllib``), so it works in a QGIS whose Python has nothing else installed — it is
what fetches the models *before* anything else can run. What it guarantees:

* the file appears under its final name only complete and verified: it is written to ``<name>.part`` and
  renamed with :func:`os.replace` after the size and sha256 match (a crash or a cancel never leaves a
  file that looks installed);
* an interrupted transfer continues with an HTTP ``Range`` request from the bytes already on disk; a server
  that ignores ``Range`` (answers 200) or refuses it (416) gets a clean restart from byte 0;
* a download whose checksum is wrong is deleted, and the error says so;
* ``progress(done, total)`` is called as bytes arrive (``total`` is None when the server does not say);
  ``cancel()`` is asked between chunks and while hashing; a cancel keeps the ``.part`` file so that the
  next try resumes;
* every failure is a :class:`DownloadError` whose message says in words what went wrong (no network, a
  proxy, 404, TLS, disk full, no permission), never a bare traceback.
"""
from __future__ import annotations

import errno
import http.client
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from .errors import CancelledError, DownloadError
from .modelfile import file_matches, sha256_of

Progress = Callable[[int, Optional[int]], None]
Cancel = Callable[[], bool]

CHUNK = 1 << 16
# Transfers that break off are picked up again from where they stopped; after this many tries in a
# row without a byte of progress the download gives up (a server that always cuts off at the same place).
MAX_STALLED_TRIES = 3
USER_AGENT = "sar2eo_cloud_plugin-model-download"


def part_path(dest: Union[str, os.PathLike]) -> Path:
    """Where the bytes of ``dest`` collect until they are complete and verified."""
    d = Path(dest)
    return d.with_name(d.name + ".part")


def _proxy_in_use(url: str) -> Optional[str]:
    scheme = url.split(":", 1)[0].lower()
    proxies = urllib.request.getproxies()
    host = urllib.parse.urlparse(url).hostname or ""
    if scheme in proxies and not urllib.request.proxy_bypass(host):
        return proxies[scheme]
    return None


def explain(exc: BaseException, url: str, dest: Path) -> str:
    """One sentence for a user: what went wrong with fetching ``url`` into ``dest`` and what to try."""
    proxy = _proxy_in_use(url)
    via = f" through the proxy {proxy}" if proxy else ""
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code == 404:
            return f"{url} was not found on the server (HTTP 404): the address is wrong or the file was removed."
        if exc.code == 407:
            return (f"The proxy{(' ' + proxy) if proxy else ''} asks for a user name and password (HTTP 407): set "
                    "them in QGIS Settings > Options > Network, or in the https_proxy variable.")
        if exc.code in (401, 403):
            return f"The server refused access to {url} (HTTP {exc.code})."
        return f"The server answered HTTP {exc.code} ({exc.reason}) for {url}{via}; try again later."
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLError) or isinstance(exc, ssl.SSLError):
        return (f"The secure (TLS) connection to {url} failed ({reason}): the system's certificates may be out "
                "of date, or a proxy or firewall is intercepting the connection.")
    if isinstance(reason, socket.gaierror):
        host = urllib.parse.urlparse(url).hostname
        return (f"No network: the name {host} could not be looked up{via}. Check the internet connection "
                "(or the proxy in QGIS Settings > Options > Network).")
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"The server of {url} did not answer in time{via}; the network may be slow or down. Try again."
    if isinstance(reason, ConnectionRefusedError):
        if proxy:
            return f"The proxy {proxy} refused the connection: check the proxy settings."
        return f"The server of {url} refused the connection (is the address right, is the server up?)."
    if isinstance(reason, (ConnectionResetError, http.client.HTTPException)):
        return f"The connection to {url} broke off{via} ({reason}); try again, the download resumes."
    if isinstance(reason, OSError):
        if reason.errno == errno.ENOSPC:
            return f"The disk holding {dest.parent} is full: free some space, or choose another models folder."
        if reason.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return (f"No permission to write in {dest.parent}: choose a models folder you can write to "
                    "(Model manager > Folder).")
        if reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN):
            return f"No network: {url} cannot be reached{via} ({os.strerror(reason.errno)})."
    return f"Downloading {url} failed{via}: {reason}"


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _content_range_start(value: Optional[str]) -> Optional[int]:
    # "bytes 100-999/1000" -> 100
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def _transfer(url: str, part: Path, size: Optional[int], progress: Optional[Progress], cancel: Optional[Cancel],
              timeout: float) -> bool:
    """One HTTP request appending to (resume) or replacing (restart) ``part``. Raises OSError/HTTP errors
    as they come; returns False when the body ended before its announced length (the caller resumes)."""
    start = part.stat().st_size if part.is_file() else 0
    if size is not None and start > size:   # longer than the file can be: not ours to resume
        start = 0
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:        # the server will not serve that range: start over
            part.unlink()
            resp = _open(url, 0, timeout)
            start = 0
        else:
            raise
    with resp:
        status = getattr(resp, "status", 200)
        if start and (status != 206 or _content_range_start(resp.headers.get("Content-Range")) != start):
            start = 0                        # Range ignored: the body is the whole file again
        length = resp.headers.get("Content-Length")
        total = size if size is not None else (start + int(length) if length and length.isdigit() else None)
        done = start
        if progress:
            progress(done, total)
        with open(part, "ab" if start else "wb") as fh:
            while True:
                if cancel is not None and cancel():
                    raise CancelledError(f"Download of {url} cancelled; {done} bytes kept in {part} for a resume.")
                try:
                    # read1: whatever has arrived (up to CHUNK), so that progress and cancel stay live on a
                    # slow connection; read() would wait for a whole CHUNK
                    chunk = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
                except http.client.IncompleteRead as exc:
                    fh.write(exc.partial)
                    return False
                if not chunk:
                    # the body ended: complete unless the server announced more than it sent
                    return not getattr(resp, "length", None)
                fh.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)


def download(urls: Union[str, Sequence[str]], dest: Union[str, os.PathLike], sha256: str,
             size: Optional[int] = None, progress: Optional[Progress] = None, cancel: Optional[Cancel] = None,
             timeout: float = 30.0) -> Path:
    """Fetch ``dest`` from the first of ``urls`` that works; return ``dest`` once its size and sha256 match.

    A ``dest`` that already matches is kept and nothing is fetched. Raises :class:`DownloadError` (in words)
    or :class:`CancelledError`.
    """
    dest = Path(dest)
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise DownloadError(f"No download address is known for {dest.name}.")
    if file_matches(dest, sha256, size, cancel):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(explain(exc, url_list[0], dest)) from exc
    part = part_path(dest)
    failures = []
    for url in url_list:
        try:
            _fetch_one(url, part, size, progress, cancel, timeout)
        except CancelledError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            failures.append(explain(exc, url, dest))
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS):
                break                        # another mirror will not help a full or read-only disk
            continue
        have = part.stat().st_size
        if size is not None and have != size:
            part.unlink()
            failures.append(f"{url} gave {have} bytes, but {dest.name} is {size} bytes; the partial file was removed.")
            continue
        actual = sha256_of(part, cancel)
        if actual != sha256:
            part.unlink()
            failures.append(f"{url} gave a file whose sha256 ({actual[:12]}…) is not the expected one "
                            f"({sha256[:12]}…): it was removed and not used.")
            continue
        try:
            os.replace(part, dest)
        except OSError as exc:
            raise DownloadError(explain(exc, url, dest)) from exc
        return dest
    raise DownloadError(f"Could not download {dest.name}: " + " ".join(failures))


def _fetch_one(url: str, part: Path, size: Optional[int], progress: Optional[Progress], cancel: Optional[Cancel],
               timeout: float) -> None:
    """Request ``url`` until ``part`` is complete: a transfer that breaks off is resumed, up to
    MAX_STALLED_TRIES tries in a row that add nothing."""
    stalled = 0
    while True:
        before = part.stat().st_size if part.is_file() else 0
        broke: Optional[BaseException] = None
        try:
            complete = _transfer(url, part, size, progress, cancel, timeout)
        except (ConnectionResetError, http.client.HTTPException, socket.timeout, TimeoutError) as exc:
            broke, complete = exc, False
        have = part.stat().st_size if part.is_file() else 0
        if complete and (size is None or have >= size):
            return
        stalled = 0 if have > before else stalled + 1
        if stalled >= MAX_STALLED_TRIES:
            if broke is not None:
                raise broke
            return                           # the caller reports the short file

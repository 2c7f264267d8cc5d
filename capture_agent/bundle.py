"""Offline bundles: a whole run in one file, for device hosts that cannot reach the server.

A bundle is a ZIP archive (stored, not compressed: float tensors barely compress):

    records/000000.safetensors ...   one entry per record, in index order
    run.json                         bundle id, fingerprint, options, prompt set, record
                                     hashes and the run digest; written last

It is written under a temporary name and renamed when complete, so an interrupted capture never
leaves a bundle that looks whole. Reading verifies the archive's CRCs, every record's sha256 and
the run digest before anything is sent.

    path = write_bundle(...)                 # via BundleSink in capture()
    bundle = read_bundle("run.cmpbundle")    # raises BundleError when truncated or altered
"""

from __future__ import annotations

import json
import os
import pathlib
import uuid
import zipfile
import zlib
from dataclasses import dataclass

from capture_agent.prompts import Prompt, PromptSet
from proto.digests import record_sha256, run_digest

FORMAT = "cmp-bundle/1"


class BundleError(ValueError):
    """A bundle that cannot be trusted: truncated, altered, or not a bundle at all."""


@dataclass
class Bundle:
    bundle_id: str
    fingerprint: dict[str, str]
    options: dict[str, str]
    prompt_set: PromptSet
    records: list[tuple[int, bytes]]
    digest: str
    perf: list[dict]


def _entry(index: int) -> str:
    return f"records/{index:06d}.safetensors"


class BundleSink:
    """Where capture() puts a run when it writes a bundle instead of streaming to a server."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.bundle_id = uuid.uuid4().hex
        self._zip: zipfile.ZipFile | None = None
        self._header: dict = {}
        self._hashes: list[str] = []

    def open_run(self, fingerprint: dict[str, str], options: dict[str, str], prompt_set) -> str:
        self._zip = zipfile.ZipFile(self.partial, "w", compression=zipfile.ZIP_STORED)
        self._header = {
            "format": FORMAT, "bundle_id": self.bundle_id, "fingerprint": fingerprint, "options": options,
            "prompt_set": {"name": prompt_set.name, "digest": prompt_set.digest,
                           "prompts": [{"id": p.id, "text": p.text} for p in prompt_set.prompts]},
        }
        return self.bundle_id

    def upload(self, records) -> None:
        for index, blob in records:
            self._zip.writestr(_entry(index), blob)
            self._hashes.append(record_sha256(blob))

    def close_run(self, record_count: int, digest: str, abort_reason: str = "", perf=None) -> tuple[str, str]:
        if abort_reason:
            self._zip.close()
            self.partial.unlink(missing_ok=True)
            return "failed", abort_reason
        self._header.update(record_count=record_count, record_sha256=self._hashes, digest=digest, perf=perf or [])
        self._zip.writestr("run.json", json.dumps(self._header, ensure_ascii=False, indent=1))
        self._zip.close()
        os.replace(self.partial, self.path)
        return "complete", ""


def read_bundle(path: str | os.PathLike) -> Bundle:
    """Reads and fully verifies a bundle; raises BundleError saying what is wrong."""
    path = pathlib.Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            header = json.loads(z.read("run.json"))
            if header.get("format") != FORMAT:
                raise BundleError(f"{path}: not a {FORMAT} bundle (format {header.get('format')!r})")
            count = header["record_count"]
            records = [(i, z.read(_entry(i))) for i in range(count)]
    except BundleError:
        raise
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle file") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise BundleError(f"{path}: damaged or truncated bundle ({e}); capture it again") from None
    except KeyError as e:
        raise BundleError(f"{path}: incomplete bundle, {e.args[0]} is missing; capture it again") from None
    except (ValueError, TypeError) as e:
        raise BundleError(f"{path}: unreadable run.json ({e})") from None
    hashes = [record_sha256(blob) for _, blob in records]
    if hashes != header["record_sha256"] or run_digest(hashes) != header["digest"]:
        raise BundleError(f"{path}: records do not match their recorded sha256 digests: the bundle was altered")
    ps = header["prompt_set"]
    prompt_set = PromptSet(ps["name"], tuple(Prompt(p["id"], p["text"]) for p in ps["prompts"]))
    if prompt_set.digest != ps["digest"] or len(prompt_set.prompts) != count:
        raise BundleError(f"{path}: its prompt set does not match its digest or its record count")
    return Bundle(header["bundle_id"], header["fingerprint"], header["options"], prompt_set, records,
                  header["digest"], header.get("perf", []))

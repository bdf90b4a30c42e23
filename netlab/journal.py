"""The embedded store on disk: a snapshot plus an append-only journal of writes in the
lab's run directory, so that what the supervisor knew survives it (and a later
supervisor can read it back: `Journal.replay`).

One JSON line per write: {"rev", "res", "ns", "name", "obj"} (obj null: a delete).
Once the journal holds COMPACT_AT lines, the whole state is written to the snapshot
(atomically: a temporary file, then rename) and the journal starts again. A line cut
short by a crash is ignored on replay.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

COMPACT_AT = 20_000


class Journal:
    def __init__(self, directory: Path, compact_at: int = COMPACT_AT):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.snapshot_path = self.directory / "snapshot.json"
        self.log_path = self.directory / "journal.jsonl"
        self.compact_at = compact_at
        self.lines = 0
        self._log = None

    def replay(self) -> tuple[int, dict[str, dict[tuple[str, str], dict]]]:
        """The revision and the objects (by resource, then (namespace, name)) on disk."""
        revision, objects = 0, {}
        try:
            snap = json.loads(self.snapshot_path.read_text())
            revision = int(snap["revision"])
            for res, items in snap["objects"].items():
                objects[res] = {(o["ns"], o["name"]): o["obj"] for o in items}
        except FileNotFoundError:
            pass
        try:
            with self.log_path.open() as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:  # cut short by a crash: the write never finished
                        break
                    if entry["rev"] <= revision:
                        continue
                    revision = entry["rev"]
                    key = (entry["ns"], entry["name"])
                    if entry["obj"] is None:
                        objects.get(entry["res"], {}).pop(key, None)
                    else:
                        objects.setdefault(entry["res"], {})[key] = entry["obj"]
        except FileNotFoundError:
            pass
        return revision, objects

    def start(self, revision: int, objects: dict[str, dict[tuple[str, str], dict]]) -> None:
        """Begin journaling from this state (written as the snapshot)."""
        self._snapshot(revision, objects)

    def append(self, revision: int, res: str, key: tuple[str, str], obj_json: str | None) -> None:
        """One write: the object already as JSON (None: deleted)."""
        if self._log is None:  # closed: the lab is being torn down
            return
        ns, name, kind = json.dumps(key[0]), json.dumps(key[1]), json.dumps(res)
        self._log.write(
            f'{{"rev":{revision},"res":{kind},"ns":{ns},"name":{name},"obj":{obj_json or "null"}}}\n'
        )
        self._log.flush()  # in the kernel's hands: it survives the supervisor, not the machine
        self.lines += 1

    def due(self) -> bool:
        return self.lines >= self.compact_at

    def compact(self, revision: int, objects: dict[str, dict[tuple[str, str], dict]]) -> None:
        self._snapshot(revision, objects)

    def _snapshot(self, revision: int, objects: dict[str, dict[tuple[str, str], dict]]) -> None:
        doc: dict[str, Any] = {
            "revision": revision,
            "objects": {
                res: [{"ns": k[0], "name": k[1], "obj": o} for k, o in sorted(items.items())]
                for res, items in objects.items()
                if items
            },
        }
        tmp = self.snapshot_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
        os.replace(tmp, self.snapshot_path)
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("w")
        self.lines = 0

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

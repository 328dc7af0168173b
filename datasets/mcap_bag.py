"""Raw rosbag2 (MCAP) recording of every topic, one bag per episode, published atomically.

The recorder subscribes with `raw=True` and hands each message over as it arrived: topic, type name
('sensor_msgs/msg/Image'), the serialized CDR bytes and a time in ns (the receive time, as `ros2 bag
record` stores it). Nothing is decoded or converted on the way in, so the bag is what the graph carried,
for replay (`ros2 bag play`) and debugging. Writing goes through `rosbags` (pure Python), which takes the
message definitions from its Jazzy typestore.

Layout under the recorder's bag root:

    episode_000123/                           a complete rosbag2 bag, version 8 (what Jazzy's
        metadata.yaml                         rosbag2 reads), custom_data "twinloop.episode" =
        episode_000123.mcap                   the EpisodeMeta JSON when the recorder passed one
    .episode_000124.partial/episode_000124/   the bag being written; never read

Protocol: `begin(i)` writes the bag inside the hidden `.partial` folder. `close(meta)` finishes it in place
(MCAP summary and footer, then metadata.yaml, which rosbags writes to a temporary name and renames).
`commit()` renames the finished bag folder to `episode_<i>` (atomic) and removes the empty `.partial`.
A crash before the rename leaves only a `.partial` folder, which `recover()` removes on the next start, or
publishes when it holds a finished bag of an episode that the recorder committed to its other formats.
A recorder that closes the bag before it marks the staged episode complete, and commits (renames) the bag
after the zarr and LeRobot commits, therefore never loses the bag of an episode it kept, and never
publishes one it dropped.

Reading (`read_bag`) deserializes with the message definitions stored in the bag. Damaged bags raise a
one-line ValueError naming the file, never a traceback from deep inside the MCAP reader.

As with the zarr buffer, a killed process is covered, power loss is not (no fsync).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from types import TracebackType

import yaml
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Connection
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from twinloop.datasets.episode import EpisodeMeta

log = logging.getLogger(__name__)

BAG_VERSION = 8  # rosbag2 metadata version of Jazzy; rosbags can also write 9 (Kilted and later)
META_KEY = "twinloop.episode"
_BAG_NAME = re.compile(r"^episode_(\d{6,})$")
_PARTIAL_NAME = re.compile(r"^\.episode_(\d{6,})\.partial$")

_typestores: dict[Stores, Typestore] = {}


def jazzy_typestore() -> Typestore:
    """The standard ROS 2 Jazzy message types (built once; building takes a few hundred ms)."""
    if Stores.ROS2_JAZZY not in _typestores:
        _typestores[Stores.ROS2_JAZZY] = get_typestore(Stores.ROS2_JAZZY)
    return _typestores[Stores.ROS2_JAZZY]


def bag_name(index: int) -> str:
    return f"episode_{index:06d}"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class McapEpisode:
    """One episode's bag while it is written. Thread-safe `write`, so any executor may call it."""

    def __init__(self, root: Path, index: int, typestore: Typestore, compress: bool) -> None:
        """Use `McapEpisodeWriter.begin`."""
        self.root = root
        self.index = index
        self.name = bag_name(index)
        self.partial = root / f".{self.name}.partial"
        self.bag = self.partial / self.name
        self.message_count = 0
        self._typestore = typestore
        self._connections: dict[tuple[str, str], Connection] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._done = False
        self.partial.mkdir()
        self._writer = Writer(self.bag, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        if compress:  # zstd per MCAP chunk, which every MCAP reader (and ros2 bag) decodes natively
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()

    def write(self, topic: str, msgtype: str, cdr: bytes | memoryview, t_ns: int) -> None:
        """Append one serialized message; the first message of a (topic, type) pair registers it."""
        with self._lock:
            if self._closed:
                raise ValueError(f"{self.bag}: closed, cannot write {topic}")
            connection = self._connections.get((topic, msgtype))
            if connection is None:
                try:
                    connection = self._writer.add_connection(topic, msgtype, typestore=self._typestore)
                except Exception as err:
                    raise ValueError(f"{topic}: cannot record type {msgtype!r} ({_one_line(err)})") from None
                self._connections[(topic, msgtype)] = connection
            self._writer.write(connection, int(t_ns), cdr)
            self.message_count += 1

    def close(self, meta: EpisodeMeta | None = None) -> None:
        """Finish the bag in place (still hidden); `meta` goes into metadata.yaml's custom_data."""
        with self._lock:
            if self._closed:
                return
            if meta is not None:
                self._writer.set_custom_data(META_KEY, meta.to_json())
            self._writer.close()
            self._closed = True

    def commit(self, meta: EpisodeMeta | None = None) -> Path:
        """Publish the bag as `<root>/episode_<index>` (an atomic rename), finishing it first if `close`
        was not called (then with `meta`)."""
        if self._done:
            raise ValueError(f"{self.root / self.name}: committed or discarded already")
        self.close(meta)
        path = _publish(self.root, self.index)
        self._done = True
        return path

    def discard(self) -> None:
        """Drop the episode's bag."""
        with self._lock:
            if not self._closed:
                self._writer.abort()
                self._closed = True
        shutil.rmtree(self.partial, ignore_errors=True)
        self._done = True

    def __enter__(self) -> McapEpisode:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Discards the bag if the block raised or never committed."""
        if not self._done:
            self.discard()


class McapEpisodeWriter:
    """The bag root of a recording: one `McapEpisode` at a time, crash leftovers handled by `recover`."""

    def __init__(
        self, root: str | Path, *, compress: bool = False, typestore: Typestore | None = None
    ) -> None:
        """`compress`: zstd MCAP chunks. Off by default: camera frames with sensor noise shrink only ~1.4x
        and zstd would cost the recorder a good part of a core at 30 fps per camera; the zarr and
        LeRobot copies are the compact ones."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.compress = compress
        self.typestore = typestore or jazzy_typestore()

    def begin(self, index: int) -> McapEpisode:
        final, partial = self.root / bag_name(index), self.root / f".{bag_name(index)}.partial"
        if final.exists():
            raise ValueError(f"{final}: recorded already")
        if partial.exists():
            raise ValueError(f"{partial}: left over from a crash; run recover() first")
        return McapEpisode(self.root, index, self.typestore, self.compress)

    def recover(self, complete: Collection[int] = ()) -> str | None:
        """Handle `.partial` leftovers of a crash: publish the finished bag of an episode in `complete`
        (the episodes the recorder kept), delete everything else. A one-line report, None if clean."""
        published, removed = [], []
        for partial in sorted(self.root.iterdir()):
            match = _PARTIAL_NAME.match(partial.name)
            if not match or not partial.is_dir():
                continue
            index = int(match[1])
            bag = partial / bag_name(index)
            if index in complete and not (self.root / bag_name(index)).exists() and _is_finished(bag):
                _publish(self.root, index)
                published.append(bag_name(index))
            else:
                shutil.rmtree(partial)
                removed.append(partial.name)
        if not published and not removed:
            return None
        parts = [f"published finished {', '.join(published)}"] if published else []
        parts += [f"removed unfinished {', '.join(removed)}"] if removed else []
        report = f"{self.root}: recovered MCAP bags after a crash: " + "; ".join(parts)
        log.warning("%s", report)
        return report

    def episode_paths(self) -> list[Path]:
        return episode_paths(self.root)

    def next_index(self) -> int:
        """The index after the last published bag (0 for an empty root)."""
        paths = self.episode_paths()
        return int(_BAG_NAME.match(paths[-1].name)[1]) + 1 if paths else 0


def _publish(root: Path, index: int) -> Path:
    partial = root / f".{bag_name(index)}.partial"
    final = root / bag_name(index)
    (partial / bag_name(index)).rename(final)  # the commit point (fails if `final` exists)
    partial.rmdir()
    return final


def _is_finished(bag: Path) -> bool:
    """metadata.yaml is the last file a bag gets, so a bag that has one and opens is finished."""
    if not (bag / "metadata.yaml").is_file():
        return False
    try:
        with AnyReader([bag], default_typestore=jazzy_typestore()):
            return True
    except Exception:
        return False


def episode_paths(root: str | Path) -> list[Path]:
    """Published episode bags under `root`, by index."""
    root = Path(root)
    if not root.is_dir():
        return []
    bags = [p for p in root.iterdir() if _BAG_NAME.match(p.name) and (p / "metadata.yaml").is_file()]
    return sorted(bags, key=lambda p: int(_BAG_NAME.match(p.name)[1]))


def _bag_files(path: Path) -> list[Path]:
    """The storage files a bag's metadata.yaml lists; a damaged metadata.yaml is named in the error."""
    if not path.is_dir():
        raise ValueError(f"{path}: no rosbag2 bag there (not a folder)")
    meta_file = path / "metadata.yaml"
    if not meta_file.is_file():
        raise ValueError(f"{path}: not a finished rosbag2 bag (no metadata.yaml)")
    try:
        info = yaml.safe_load(meta_file.read_text())["rosbag2_bagfile_information"]
        files = [path / Path(name).name for name in info["relative_file_paths"]]
    except Exception as err:
        raise ValueError(f"{meta_file}: corrupt rosbag2 metadata ({_one_line(err)})") from None
    for file in files:
        if not file.is_file():
            raise ValueError(f"{file}: missing (listed in {meta_file})")
    return files


def bag_meta(path: str | Path) -> EpisodeMeta | None:
    """The EpisodeMeta stored with a bag, if the recorder passed one."""
    path = Path(path)
    _bag_files(path)
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    text = (info.get("custom_data") or {}).get(META_KEY)
    try:
        return None if text is None else EpisodeMeta.from_json(text)
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path / 'metadata.yaml'}: bad {META_KEY} ({_one_line(err)})") from None


def read_bag(path: str | Path, typestore: Typestore | None = None) -> Iterator[tuple[str, str, int, object]]:
    """(topic, msgtype, t_ns, message) for every message of a bag folder, in time order.

    The bag is checked before this returns, so a damaged one raises here, not at the first message.
    Messages are deserialized with the definitions stored in the bag (falling back to `typestore`,
    Jazzy's by default, for bags without them).
    """
    path = Path(path)
    files = _bag_files(path)
    where = files[0] if len(files) == 1 else path
    typestore = typestore or jazzy_typestore()
    _open_reader(path, typestore, where).close()
    return _messages(path, typestore, where)


def _open_reader(path: Path, typestore: Typestore, where: Path) -> AnyReader:
    reader = AnyReader([path], default_typestore=typestore)
    try:
        reader.open()
    except Exception as err:
        raise ValueError(f"{where}: corrupt or truncated bag ({_one_line(err)})") from None
    return reader


def _messages(path: Path, typestore: Typestore, where: Path) -> Iterator[tuple[str, str, int, object]]:
    reader = _open_reader(path, typestore, where)
    try:
        messages = reader.messages()
        count = 0
        while True:
            try:
                connection, t_ns, raw = next(messages)
            except StopIteration:
                return
            except Exception as err:
                raise ValueError(f"{where}: corrupt after {count} messages ({_one_line(err)})") from None
            try:
                message = deserialize_cdr(reader.typestore, raw, connection.msgtype)
            except Exception as err:
                raise ValueError(
                    f"{where}: message {count} on {connection.topic} is not a valid {connection.msgtype} "
                    f"({_one_line(err)})"
                ) from None
            count += 1
            yield connection.topic, connection.msgtype, t_ns, message
    finally:
        reader.close()


def deserialize_cdr(typestore: Typestore, raw: bytes | memoryview, msgtype: str) -> object:
    """Deserialize CDR bytes, accepting trailing padding.

    rclpy's `serialize_message` returns a buffer as long as Fast CDR's size estimate, which reserves
    alignment for empty sequences that the data never uses (a JointState without efforts gets 4-8 extra
    bytes), and rosbags' `deserialize_cdr` rejects anything longer than the message plus 3 bytes ("CDR
    message size mismatch"). The message itself is complete, so it is parsed with the same generated
    deserializer, minus that length check. (Payloads from raw subscriptions are exact and take the fast
    path.)
    """
    try:
        return typestore.deserialize_cdr(raw, msgtype)
    except SerdeError as err:
        if "size mismatch" not in str(err):
            raise
    msgdef = typestore.get_msgdef(msgtype)
    little_endian = bool(raw[1])
    parse = msgdef.deserialize_cdr_le if little_endian else msgdef.deserialize_cdr_be
    message, _ = parse(memoryview(raw)[4:], 0, msgdef.cls, typestore)
    return message

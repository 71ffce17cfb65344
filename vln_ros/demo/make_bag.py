"""Write the demo bag and its scripted answers from the corridor of vln_ros/demo/corridor.py.

    python -m vln_ros.demo.make_bag [--out demo] [--force]

<out>/corridor/ is an ordinary rosbag2 MCAP bag, the way a robot's recording of the walk would look:
JPEG camera frames at 10 Hz on /camera/image_raw/compressed and the instruction on /vln/instruction.
<out>/corridor_answers.jsonl holds an answer for every frame (the replay backend's JSONL, matched by
the keyframe's stamp): what a good model would say there, written by corridor.py, not by a model.
Needs no ROS (rosbags serialises the messages), so it runs anywhere numpy and OpenCV do.
"""
from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vln_ros import interface
from vln_ros.core.backends.base import AnswerRecord, AnswerRecorder
from vln_ros.core.bags import NS_PER_S
from vln_ros.demo import corridor

if TYPE_CHECKING:
    from rosbags.typesys.stores.ros2_kilted import sensor_msgs__msg__CompressedImage as CompressedImage

REPO = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO / 'demo'
BAG_NAME, ANSWERS_NAME = 'corridor', 'corridor_answers.jsonl'
CAMERA_TOPIC = '/camera/image_raw'           # the driver's raw topic; the bag holds its /compressed
INSTRUCTION_TOPIC = '/' + interface.INSTRUCTION  # the stack runs in the root namespace
START_NS = 1_763_856_000 * 10**9             # bag time of the first frame (2025-11-23 00:00 UTC)
JPEG_QUALITY = 80
SCRIPTED_MODEL = 'scripted answers (vln_ros/demo/corridor.py)'
# How corrupt_copy breaks a frame: (format, data) from the good JPEG. The camera node must reject and
# count each of these, never decode it.
CORRUPTIONS: tuple[Callable[[bytes], tuple[str, bytes]], ...] = (
    lambda jpeg: ('jpeg', bytes(np.random.default_rng(len(jpeg)).integers(0, 256, len(jpeg), np.uint8))),
    lambda jpeg: ('jpeg', b''),
    lambda jpeg: ('png', b'\x89PNG\r\n\x1a\n' + jpeg[8:200]),
)


def frame_stamps_ns() -> list[int]:
    return [START_NS + round(t * NS_PER_S) for t in corridor.frame_times(corridor.walk())]


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError('OpenCV could not encode a JPEG')
    return data.tobytes()


def write_bag(path: Path) -> int:
    """The walk as a bag at `path` (must not exist); returns the number of frames written."""
    store = get_typestore(Stores.ROS2_KILTED)
    image_type, string_type = (store.types['sensor_msgs/msg/CompressedImage'], store.types['std_msgs/msg/String'])
    header_type, time_type = store.types['std_msgs/msg/Header'], store.types['builtin_interfaces/msg/Time']
    walk = corridor.walk()
    stamps = frame_stamps_ns()
    writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        camera = writer.add_connection(CAMERA_TOPIC + '/compressed', image_type.__msgtype__, typestore=store)
        instruction = writer.add_connection(INSTRUCTION_TOPIC, string_type.__msgtype__, typestore=store)
        instruction_ns = START_NS + round(corridor.INSTRUCTION_AT_S * NS_PER_S)
        written_instruction = False
        for stamp_ns in stamps:
            if not written_instruction and stamp_ns >= instruction_ns:
                writer.write(instruction, instruction_ns, store.serialize_cdr(
                    string_type(data=corridor.INSTRUCTION), string_type.__msgtype__))
                written_instruction = True
            data = jpeg(corridor.render(walk.pose_at((stamp_ns - START_NS) / NS_PER_S)))
            header = header_type(stamp=time_type(*divmod(stamp_ns, NS_PER_S)), frame_id='camera')
            message = image_type(header=header, format='jpeg', data=np.frombuffer(data, np.uint8))
            writer.write(camera, stamp_ns, store.serialize_cdr(message, image_type.__msgtype__))
    finally:
        writer.close()
    return len(stamps)


def corrupt_copy(source: Path, path: Path, every: int) -> int:
    """A copy of the bag at `source` in which every `every`-th camera frame is broken, in turn by each of
    CORRUPTIONS (for the fault tests); returns how many frames were broken."""
    store = get_typestore(Stores.ROS2_KILTED)
    broken = 0
    with Reader(source) as reader:
        writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        try:
            connections = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store) for c in reader.connections}
            frame = 0
            for connection, stamp_ns, data in reader.messages():
                payload: bytes | memoryview = data
                if connection.topic == CAMERA_TOPIC + '/compressed':
                    if frame % every == every - 1:
                        message = cast('CompressedImage', store.deserialize_cdr(data, connection.msgtype))
                        message.format, raw = CORRUPTIONS[broken % len(CORRUPTIONS)](message.data.tobytes())
                        message.data = np.frombuffer(raw, np.uint8)
                        payload = store.serialize_cdr(message, connection.msgtype)
                        broken += 1
                    frame += 1
                writer.write(connections[connection.id], stamp_ns, payload)
        finally:
            writer.close()
    return broken


def write_answers(path: Path) -> int:
    """One scripted answer per frame stamp, for the replay backend (match: stamp)."""
    walk = corridor.walk()
    try:
        from vln_ros.core.prompts import qwen_tokenizer
        tokenizer = qwen_tokenizer()
    except ImportError:
        tokenizer = None
    recorder = AnswerRecorder(path)
    stamps = frame_stamps_ns()
    try:
        for stamp_ns in stamps:
            text = corridor.answer_text(walk, (stamp_ns - START_NS) / NS_PER_S)
            recorder.write(AnswerRecord(
                stamp_ns=stamp_ns, task_id='', instruction=corridor.INSTRUCTION, prompt_hash='', text=text,
                latency_s=corridor.SCRIPTED_LATENCY_S, first_token_s=corridor.SCRIPTED_FIRST_TOKEN_S,
                output_tokens=len(tokenizer.encode(text).ids) if tokenizer else None, model=SCRIPTED_MODEL))
    finally:
        recorder.close()
    return len(stamps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, default=DEMO_DIR, help='folder to write into (default: demo/)')
    parser.add_argument('--force', action='store_true', help='replace a bag and answers already there')
    args = parser.parse_args(argv)
    bag, answers = args.out / BAG_NAME, args.out / ANSWERS_NAME
    if (bag.exists() or answers.exists()) and not args.force:
        parser.error(f'{bag} or {answers} exists (--force replaces them)')
    shutil.rmtree(bag, ignore_errors=True)
    answers.unlink(missing_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    frames = write_bag(bag)
    write_answers(answers)
    size = sum(f.stat().st_size for f in bag.iterdir())
    print(f'{bag}: {frames} frames ({frames / corridor.FPS:.1f} s, {size / 1e6:.1f} MB); '
          f'{answers}: one answer per frame')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

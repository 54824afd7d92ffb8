"""Swapper phases (prepare / forward / paste), batching over frames, and the freed batch dimension.

Models are the contract-faithful fixtures of `tests/onnx_fixtures.py` (identity swapper: its
output is its target, so a batched call that mixed up rows would paste the wrong face), imported
into temporary caches; faces are real BlazeFace detections on real photos.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fusionray.errors import ConfigError, ModelError
from fusionray.faces.align import align_face, face_to_template_matrix
from fusionray.faces.embed import ArcFaceEmbedder
from fusionray.faces.enhance import FaceEnhancer
from fusionray.faces.paste import paste_crop
from fusionray.models import batch as batch_module
from fusionray.models.batch import (
    BATCH_FOLDER,
    RowCalls,
    free_batch_dimension,
    plan_dynamic_batch,
)
from fusionray.models.loader import ModelOptions
from fusionray.models.onnx_file import OnnxFileParts
from fusionray.swap.base import FaceJob, SourceIdentity, Swapper
from fusionray.swap.classic import ClassicSwapper
from fusionray.swap.inswapper import CROP_SIZE, InswapperSwapper, load_emap
from fusionray.types import Face, FrameBGR
from tests import onnx_fixtures as fx
from tests.faces_fixtures import astronaut_bgr, blazeface, tom_hanks_bgr


def _options(folder: Path, **models: bytes) -> ModelOptions:
    return ModelOptions(providers=("cpu",), cache_dir=fx.import_fixtures(folder, **models),
                        shared_dirs=(), offline=True)


def _identity() -> SourceIdentity:
    vector = np.random.default_rng(1).standard_normal(512).astype(np.float32)
    return SourceIdentity(crop=None, crop_size=128, image_count=1,
                          embedding=vector / np.linalg.norm(vector))


@pytest.fixture(scope="module")
def frames() -> list[tuple[np.ndarray, list[Face]]]:
    """Three different frames: the astronaut at two scales, and two astronauts side by side."""
    image = astronaut_bgr()
    # A uint8 BGR image resized stays uint8 BGR.
    small = cast(FrameBGR, cv2.resize(image, None, fx=0.75, fy=0.75,
                                      interpolation=cv2.INTER_AREA))
    pair = np.concatenate([image, cv2.flip(image, 1)], axis=1)
    result = []
    for frame in (image, small, pair):
        faces = blazeface("back").detect(frame)
        assert faces
        result.append((frame, faces))
    assert len(result[2][1]) == 2
    return result


@pytest.fixture(scope="module")
def identity_options(tmp_path_factory: pytest.TempPathFactory) -> ModelOptions:
    return _options(tmp_path_factory.mktemp("phases"), inswapper_128=fx.build_identity_swapper(),
                    **{"gfpgan_1.4": fx.build_identity_enhancer()})


def _old_inswapper_swap(swapper: InswapperSwapper, frame: np.ndarray, faces: list[Face],
                        source: SourceIdentity) -> np.ndarray:
    """The engine's face-by-face loop before the phases existed (align, run, paste)."""
    latent = swapper.latent_for(source)
    output = frame.copy()
    for face in faces:
        crop, to_crop = align_face(output, face, CROP_SIZE, interpolation=cv2.INTER_CUBIC)
        swapped = swapper.swap_crop(crop, latent)
        paste_crop(output, swapped, to_crop, swapper.mask, colour_match=swapper.colour_match,
                   blend=swapper.blend, blend_levels=swapper.blend_levels,
                   interpolation=cv2.INTER_CUBIC)
    return output


def test_inswapper_forward_batches_jobs_of_several_frames(
    identity_options: ModelOptions, frames: list[tuple[np.ndarray, list[Face]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    swapper = InswapperSwapper(options=identity_options, max_batch=3)
    assert isinstance(swapper, Swapper)
    assert swapper.max_batch == 3 and swapper.notes == ()
    assert swapper.runner.path.parent.name == BATCH_FOLDER  # The freed-batch rewrite.
    source = _identity()
    jobs = [job for frame, faces in frames for job in swapper.prepare(frame, faces, source)]
    assert len(jobs) == 4
    batch_sizes: list[int] = []
    run = swapper.runner.run

    def counting_run(*inputs: np.ndarray) -> list[np.ndarray]:
        batch_sizes.append(inputs[0].shape[0])
        return run(*inputs)

    monkeypatch.setattr(swapper.runner, "run", counting_run)
    done = swapper.forward(jobs, source)
    assert batch_sizes == [3, 1]  # Four faces of three frames in two calls.
    for job, result in zip(jobs, done, strict=True):
        assert result.face is job.face and job.output is None
        # The identity swapper returns each row's own target: no row was mixed up.
        np.testing.assert_array_equal(result.output, job.crop)
    start = 0
    for frame, faces in frames:
        pasted = swapper.paste(frame, done[start:start + len(faces)])
        start += len(faces)
        np.testing.assert_array_equal(pasted, swapper.swap(frame, faces, source))


def test_cpu_rows_run_one_a_thread_and_several_at_once(
    identity_options: ModelOptions, frames: list[tuple[np.ndarray, list[Face]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On CPU with one row a call (`swapper.batch: 0`) and two threads, the session runs on
    one thread and two calls run at once, results in row order; asked for batches, or on one
    thread, calls go one after another on a session of the given threads."""
    two = replace(identity_options, threads=2)
    swapper = InswapperSwapper(options=two, max_batch=None)
    assert swapper.max_batch == 1 and swapper.calls.workers == 2
    assert swapper.runner.session.get_session_options().intra_op_num_threads == 1
    source = _identity()
    jobs = [job for frame, faces in frames for job in swapper.prepare(frame, faces, source)]
    assert len(jobs) == 4
    run = swapper.runner.run
    # Each call waits for another one to be running: calls made one after another would
    # time out here.
    meeting = threading.Barrier(2, timeout=10)
    threads: set[str] = set()

    def meeting_run(*inputs: np.ndarray) -> list[np.ndarray]:
        threads.add(threading.current_thread().name)
        meeting.wait()
        return run(*inputs)

    monkeypatch.setattr(swapper.runner, "run", meeting_run)
    done = swapper.forward(jobs, source)
    assert len(threads) == 2
    for job, result in zip(jobs, done, strict=True):
        np.testing.assert_array_equal(result.output, job.crop)  # each row's own face, in order
    batched = InswapperSwapper(options=two, max_batch=3)
    assert batched.calls.workers == 1
    assert batched.runner.session.get_session_options().intra_op_num_threads == 2
    one = InswapperSwapper(options=identity_options, max_batch=None)
    assert one.calls.workers == 1 and one.max_batch == 1


def test_row_calls_keep_the_row_order_and_check_their_sizes() -> None:
    spans: list[tuple[int, int]] = []

    def call(start: int, stop: int) -> np.ndarray:
        spans.append((start, stop))
        return np.arange(start, stop)

    for workers in (1, 3):
        spans.clear()
        np.testing.assert_array_equal(RowCalls(2, workers=workers).run(7, call), np.arange(7))
        assert sorted(spans) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    with pytest.raises(ValueError, match="max_batch=0, workers=1"):
        RowCalls(0)
    with pytest.raises(ValueError, match="workers=0"):
        RowCalls(1, workers=0)


def test_inswapper_swap_is_unchanged_by_the_phases(
    identity_options: ModelOptions, frames: list[tuple[np.ndarray, list[Face]]]
) -> None:
    """Bit-identical to the face-by-face loop on frames whose faces do not overlap."""
    swapper = InswapperSwapper(options=identity_options, blend="laplacian", colour_match=True)
    source = _identity()
    for frame, faces in frames:
        np.testing.assert_array_equal(swapper.swap(frame, faces, source),
                                      _old_inswapper_swap(swapper, frame, faces, source))
    original = frames[0][0].copy()
    swapper.swap(frames[0][0], frames[0][1], source)
    np.testing.assert_array_equal(frames[0][0], original)  # The input is never written.


def test_enhancer_batches_a_frames_faces(
    identity_options: ModelOptions, frames: list[tuple[np.ndarray, list[Face]]],
    tmp_path: Path,
) -> None:
    enhancer = FaceEnhancer(blend=0.5, options=_options(
        tmp_path, **{"gfpgan_1.4": fx.build_invert_enhancer()}))
    assert enhancer.runner.batchable and enhancer.notes == ()
    frame, faces = frames[2]
    together, one_by_one = frame.copy(), frame.copy()
    enhancer.enhance_many(together, faces)
    for face in faces:
        enhancer.enhance(one_by_one, face)
    assert not np.array_equal(together, frame)
    np.testing.assert_array_equal(together, one_by_one)
    swapper = InswapperSwapper(options=identity_options, enhancer="gfpgan_1.4")
    assert swapper.enhancer is not None and swapper.enhancer.runner.batchable


def test_fixed_batch_graph_falls_back_to_one_with_a_note(
    tmp_path: Path, frames: list[tuple[np.ndarray, list[Face]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The colour swapper reshapes to a constant [1, 3, 1, 1]: batch 2 fails in ORT."""
    options = _options(tmp_path, inswapper_128=fx.build_colour_swapper())
    swapper = InswapperSwapper(options=options)
    assert swapper.max_batch == 1 and not swapper.runner.batchable
    assert swapper.runner.path.name == "inswapper_128.onnx"
    assert len(swapper.notes) == 1
    assert swapper.notes[0].startswith("inswapper_128: batch stays at 1 (the graph fails at "
                                       "batch 2 in ONNX Runtime")
    assert "Reshape" in swapper.notes[0]
    frame, faces = frames[2]
    jobs = swapper.forward(swapper.prepare(frame, faces, _identity()), _identity())
    assert [job.output is not None for job in jobs] == [True, True]
    # The verdict is cached: a second engine neither rewrites nor checks again.
    monkeypatch.setattr(batch_module, "_rewrite_and_check", _fail)
    assert InswapperSwapper(options=options).notes == swapper.notes


def _fail(*args: object, **kwargs: object) -> None:
    raise AssertionError("the cached verdict should have been used")


def test_freed_batch_is_cached_by_the_source_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = _options(tmp_path, inswapper_128=fx.build_identity_swapper())
    first = InswapperSwapper(options=options)
    assert options.cache_dir is not None
    cached = sorted(p.name for p in (options.cache_dir / BATCH_FOLDER).glob("*.onnx"))
    assert len(cached) == 1 and first.runner.path.name == cached[0]
    monkeypatch.setattr(batch_module, "_rewrite_and_check", _fail)
    assert InswapperSwapper(options=options).runner.path == first.runner.path
    monkeypatch.undo()
    # Another file under the same name gets its own rewrite: the key is the file's digest.
    changed = onnx.load_from_string(fx.build_identity_swapper())
    changed.doc_string = "another export"
    fx.import_fixtures(tmp_path, inswapper_128=changed.SerializeToString())
    second = InswapperSwapper(options=options)
    assert second.runner.batchable and second.runner.path != first.runner.path
    assert len(list((options.cache_dir / BATCH_FOLDER).glob("*.onnx"))) == 2


def _row_mixing_swapper() -> bytes:
    """inswapper contract; output = target − mean over the batch + 0.5: right at batch 1
    (the mean is the row itself), wrong at batch 2 although every shape works."""
    inputs = [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
              helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])]
    nodes = [helper.make_node("ReduceMean", ["target"], ["mean"], axes=[0], keepdims=1),
             helper.make_node("Sub", ["target", "mean"], ["centred"]),
             helper.make_node("Add", ["centred", "half"], ["output"])]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "half"),
             numpy_helper.from_array(fx.fixture_emap(), "emap")]
    graph = helper.make_graph(nodes, "row_mixing", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_graph_that_mixes_batch_rows_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "mixing.onnx"
    path.write_bytes(_row_mixing_swapper())
    plan = plan_dynamic_batch("mixing", path, cache_dir=tmp_path / "cache")
    assert not plan.batchable and plan.path == path
    assert plan.note is not None and "batch 2 differs from two batch-1 runs by" in plan.note
    assert not list((tmp_path / "cache" / BATCH_FOLDER).glob("*.onnx"))  # Nothing kept.


def test_free_batch_dimension_rewrites_io_and_drops_inferred_shapes() -> None:
    model = onnx.load_from_string(fx.build_identity_swapper())
    model.graph.value_info.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3]))
    rewritten = free_batch_dimension(model)
    for value in list(rewritten.graph.input) + list(rewritten.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not rewritten.graph.value_info
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # Copy, not edit.
    assert plan_dynamic_batch("x", Path("/nonexistent.onnx"), cache_dir=Path("/")).path == Path(
        "/nonexistent.onnx")


def test_load_emap_reads_only_the_last_initializer(tmp_path: Path) -> None:
    data = fx.build_colour_swapper()
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    np.testing.assert_array_equal(load_emap(path), fx.fixture_emap())
    parts = OnnxFileParts(path)
    model = onnx.load_from_string(data)
    assert parts.initializer_count == len(model.graph.initializer)
    assert [value.name for value in parts.inputs] == ["target", "source"]
    assert [value.name for value in parts.outputs] == ["output"]
    (tmp_path / "cut.onnx").write_bytes(data[:4000])
    with pytest.raises(ModelError, match=r"Cannot read .*cut\.onnx as ONNX"):
        load_emap(tmp_path / "cut.onnx")


def test_classic_phases(frames: list[tuple[np.ndarray, list[Face]]]) -> None:
    swapper = ClassicSwapper(crop_size=256)
    assert isinstance(swapper, Swapper)
    image = tom_hanks_bgr()
    source = swapper.prepare_source([image], blazeface("front").detect(image)[:1])
    frame, faces = frames[2]
    jobs = swapper.prepare(frame, faces, source)
    assert [job.crop for job in jobs] == [None, None]
    done = swapper.forward(jobs, source)
    assert all(job.output is source.crop for job in done)  # Shared, read-only, not copied.
    expected = frame.copy()
    assert source.crop is not None  # the classic engine keeps an aligned crop
    for face in faces:  # The engine's loop before the phases existed.
        paste_crop(expected, source.crop, face_to_template_matrix(face, 256), swapper.mask,
                   colour_match=True, blend="laplacian", blend_levels=5)
    np.testing.assert_array_equal(swapper.paste(frame, done), expected)
    np.testing.assert_array_equal(swapper.swap(frame, faces, source), expected)
    with pytest.raises(ValueError, match=r"needs jobs with outputs .* jobs \[0, 1\] have none"):
        swapper.paste(frame, jobs)
    with pytest.raises(ConfigError, match="needs a 256 px crop"):
        swapper.prepare(frame, faces, _identity())


def test_face_job_validation(frames: list[tuple[np.ndarray, list[Face]]]) -> None:
    face = frames[0][1][0]
    crop = np.zeros((128, 128, 3), np.uint8)
    job = FaceJob(face=face, matrix=np.eye(2, 3), crop_size=128, crop=crop)
    assert job.crop is not None and not job.crop.flags.writeable
    crop[0, 0] = 255
    assert job.crop[0, 0, 0] == 0  # A writable array is copied, not aliased.
    with pytest.raises(ValueError, match=r"matrix must be \(2, 3\), got \(3, 3\)"):
        FaceJob(face=face, matrix=np.eye(3), crop_size=128)
    with pytest.raises(ValueError, match=r"output must be uint8 \(128, 128, 3\), got float32"):
        FaceJob(face=face, matrix=np.eye(2, 3), crop_size=128,
                output=np.zeros((128, 128, 3), np.float32))
    with pytest.raises(ConfigError, match="max_batch=0"):
        InswapperSwapper(max_batch=0)


def test_arcface_embeds_faces_of_several_images_in_batches(
    tmp_path: Path, frames: list[tuple[np.ndarray, list[Face]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    embedder = ArcFaceEmbedder(options=_options(
        tmp_path, arcface_w600k_r50=fx.build_arcface_fixture()), max_batch=3)
    assert embedder.max_batch == 3 and embedder.notes == ()
    singles = [embedder.embed(frame, faces) for frame, faces in frames]
    batch_sizes: list[int] = []
    run = embedder.runner.run

    def counting_run(*inputs: np.ndarray) -> list[np.ndarray]:
        batch_sizes.append(inputs[0].shape[0])
        return run(*inputs)

    monkeypatch.setattr(embedder.runner, "run", counting_run)
    items = [frames[0], (frames[1][0], []), frames[1], frames[2]]
    together = embedder.embed_many(items)
    assert batch_sizes == [3, 1]
    assert [len(rows) for rows in together] == [1, 0, 1, 2]
    for rows, expected in zip([together[0], together[2], together[3]], singles, strict=True):
        np.testing.assert_allclose(rows, expected, atol=1e-5)  # Same faces, batched run.
    np.testing.assert_allclose(np.linalg.norm(together[3], axis=1), 1.0, atol=1e-5)
    assert embedder.embed_many([]) == []


def test_pixel_boosted_jobs_batch_their_sub_images_across_frames(
    identity_options: ModelOptions, frames: list[tuple[np.ndarray, list[Face]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At pixel_boost 256 each face is 4 sub-images of 128 px: prepare splits, forward runs all
    rows of all jobs in max_batch calls (rows never mixed up), paste interleaves them back."""
    swapper = InswapperSwapper(options=identity_options, pixel_boost=256, max_batch=3)
    source = _identity()
    jobs = [job for frame, faces in frames for job in swapper.prepare(frame, faces, source)]
    assert len(jobs) == 4 and all(job.boost == 2 and job.crop_size == 256 for job in jobs)
    for job in jobs:
        assert job.crop is not None and job.sub_images is not None
        np.testing.assert_array_equal(job.sub_images[1], job.crop[0::2, 1::2])  # (i, j) = (0, 1)
    batch_sizes: list[int] = []
    run = swapper.runner.run

    def counting_run(*inputs: np.ndarray) -> list[np.ndarray]:
        batch_sizes.append(inputs[0].shape[0])
        return run(*inputs)

    monkeypatch.setattr(swapper.runner, "run", counting_run)
    done = swapper.forward(jobs, source)
    assert batch_sizes == [3, 3, 3, 3, 3, 1]  # 16 rows of four faces of three frames.
    for job, result in zip(jobs, done, strict=True):
        assert result.output is None  # Interleaving is paste's work.
        np.testing.assert_array_equal(result.sub_outputs, job.sub_images)
        np.testing.assert_array_equal(result.model_output(), job.crop)
    start = 0
    for frame, faces in frames:
        pasted = swapper.paste(frame, done[start:start + len(faces)])
        start += len(faces)
        np.testing.assert_array_equal(pasted, swapper.swap(frame, faces, source))
    with pytest.raises(ValueError, match=r"needs 256 px jobs with 4 sub-images .* jobs \[0\]"):
        swapper.forward(InswapperSwapper(options=identity_options).prepare(*frames[0], source),
                        source)


def test_face_job_sub_image_validation(frames: list[tuple[np.ndarray, list[Face]]]) -> None:
    face = frames[0][1][0]
    crop = np.zeros((256, 256, 3), np.uint8)
    with pytest.raises(ValueError, match=r"boost must be >= 1 and divide crop_size 256, got 3"):
        FaceJob(face=face, matrix=np.eye(2, 3), crop_size=256, boost=3)
    with pytest.raises(ValueError, match=r"sub_images must be uint8 \(4, 128, 128, 3\), got "
                                         r"uint8 \(1, 256, 256, 3\)"):
        FaceJob(face=face, matrix=np.eye(2, 3), crop_size=256, crop=crop, boost=2,
                sub_images=crop[None])
    with pytest.raises(ValueError, match=r"landmarks_68 must be \(68, 2\), got \(5, 2\)"):
        FaceJob(face=face, matrix=np.eye(2, 3), crop_size=256, landmarks_68=np.zeros((5, 2)))
    job = FaceJob(face=face, matrix=np.eye(2, 3), crop_size=256, boost=2)
    assert not job.has_output
    with pytest.raises(ValueError, match="run forward"):
        job.model_output()

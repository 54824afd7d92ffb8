"""Assemble encoded segments and the source audio into the output video, atomically.

Video packets are copied from the segments in chunk order with their pts (the source's); every
audio packet of every source audio stream is copied as is, and so is every packet of the
subtitle streams the output container can hold (`SUBTITLE_CODECS`). Packets of all streams are
merged by decode time as they are read, so memory stays flat whatever the video length. The file is
written under a temporary name beside the output, re-probed and checked, and only then renamed
onto the output path: that path holds a complete, verified file or nothing.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from fusionray.errors import MediaError, OutputError, choices_message
from fusionray.media.encode import ColourTags, mp4_muxer_options, output_colour_tags
from fusionray.media.formats import MOV_ONLY_CODECS, NOT_FOR_PLAYERS_CODECS
from fusionray.media.probe import open_input, probe_video
from fusionray.media.timecode import parse_timecode, timecode_to_frames
from fusionray.types import VideoInfo

OUTPUT_FORMATS: dict[str, str] = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
"""Output container by file extension."""
# Container tags the muxer writes itself; copying the source's would be stale or refused.
_MUXER_OWNED_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder"})
_STREAM_TAGS = ("language", "title", "handler_name")
SUBTITLE_CODECS: dict[str, frozenset[str]] = {
    "mp4": frozenset({"mov_text"}),
    "mov": frozenset({"mov_text"}),
    "matroska": frozenset({"subrip", "ass", "ssa", "webvtt", "text", "dvd_subtitle",
                           "dvb_subtitle", "hdmv_pgs_subtitle"}),
}
"""Subtitle codecs each output container stores as they are (copied without re-encoding)."""
_MOV_ONLY_DECODERS = frozenset({"prores", "dnxhd"})
"""Decoder names of `formats.MOV_ONLY_CODECS` streams (what a segment's stream reports)."""


class VerificationError(MediaError):
    """The assembled file does not match the source. Every finished segment is still sound,
    but assembling them again with the same settings fails the same way: the message says what
    to change, and a plain rerun is no remedy (`resumable` is False)."""

    resumable = False


def output_extension(input_suffix: str, codec: str) -> str:
    """The default output extension (pure): the input's container where fusionray writes it
    (an .mkv keeps its subtitle streams), else .mp4; .mov for ProRes/DNxHR output unless the
    input is Matroska (Matroska holds them too); .mov for RGB H.264 and .mkv for FFV1 (an .mp4
    of them is one players cannot open: `formats.NOT_FOR_PLAYERS_CODECS`).

    >>> output_extension(".mxf", "prores_ks"), output_extension(".MKV", "dnxhd")
    ('.mov', '.mkv')
    >>> output_extension(".mp4", "libx264rgb")
    '.mov'
    """
    suffix = input_suffix.lower()
    extension = suffix if suffix in OUTPUT_FORMATS else ".mp4"
    if codec in NOT_FOR_PLAYERS_CODECS and extension == ".mp4":
        return NOT_FOR_PLAYERS_CODECS[codec]
    if codec in MOV_ONLY_CODECS and extension == ".mp4":
        return ".mov"
    return extension


def check_output_codec(output_path: str | os.PathLike[str], codec: str) -> None:
    """Fail before rendering when the output container cannot hold the encoder's stream.

    Raises:
        OutputError: ProRes or DNxHR into .mp4 (MP4 has no sample entry for them).
    """
    suffix = Path(output_path).suffix.lower()
    if suffix == ".mp4" and codec in MOV_ONLY_CODECS:
        raise OutputError(
            f"{codec} cannot be stored in .mp4 ({str(output_path)!r}): write "
            f"{str(Path(output_path).with_suffix('.mov'))!r} (or .mkv), or choose "
            "encode.codec=libx264"
        )


@dataclass(frozen=True)
class AssembleReport:
    """What `assemble_video` published."""

    output_path: str
    frame_count: int
    duration_seconds: float
    """Video duration: last pts minus first pts plus the last frame's duration."""
    byte_size: int
    audio_packets_copied: int
    """Audio packets copied over all audio streams."""
    dts_adjusted_packets: int
    """Video packets whose dts was raised at a segment join to keep dts strictly increasing."""
    start_shift_seconds: float = 0.0
    """How much later every stream starts than in the source: 0 except for Matroska output of a
    source whose audio starts before 0 (AAC priming in MP4); Matroska cannot store negative
    times, so its muxer shifts all streams alike, keeping audio/video sync."""
    subtitle_streams_copied: int = 0
    subtitle_streams_dropped: tuple[str, ...] = ()
    """Codec names of the source subtitle streams the output container cannot hold."""
    timecode: str | None = None
    """Start timecode written (a tmcd track in .mov/.mp4, a TIMECODE tag in .mkv)."""


def assemble_video(
    info: VideoInfo,
    segment_paths: Sequence[str | os.PathLike[str]],
    output_path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
) -> AssembleReport:
    """Remux `segment_paths` in order plus the source audio of `info.path` into `output_path`.

    Args:
        info: Probe result of the source video; the segments together must hold exactly its
            frames, in order, with its pts.
        segment_paths: Segment files from `encode_segment`, in chunk order, all encoded with the
            same settings.
        output_path: Final file; the extension picks the container (.mp4, .mov, .mkv).
        metadata: Container tags to write (e.g. {"comment": "..."}), over the source's tags.
            MP4/MOV keep only the standard keys (title, comment, artist, ...).

    Returns:
        A report of the published file.

    Raises:
        OutputError: Unsupported extension, output equal to the input, or the output folder
            cannot be written.
        MediaError: A segment is unreadable or does not match the others, the frames or pts do
            not match the source, or the written file fails verification.
    """
    output_path = Path(output_path)
    format_name = OUTPUT_FORMATS.get(output_path.suffix.lower())
    if format_name is None:
        raise OutputError(
            choices_message("output extension", output_path.suffix, tuple(OUTPUT_FORMATS))
            + f" (output {str(output_path)!r})"
        )
    if not segment_paths:
        raise MediaError(f"No segments to assemble for {str(output_path)!r}")
    with _open_segment(Path(segment_paths[0])) as first:
        segment_codec = first.streams.video[0].codec_context.name
    if segment_codec in _MOV_ONLY_DECODERS and format_name == "mp4":
        check_output_codec(output_path, "prores_ks" if segment_codec == "prores" else "dnxhd")
    if output_path.exists() and output_path.resolve() == Path(info.path).resolve():
        raise OutputError(f"Output path is the input video: {str(output_path)!r}")
    if not output_path.parent.is_dir():
        raise OutputError(f"Output folder does not exist: {str(output_path.parent)!r}")

    temporary_path = output_path.with_name(
        f".{output_path.stem}.partial-{os.getpid()}{output_path.suffix}"
    )
    try:
        audio_packets, dts_adjusted, subtitles = _write(
            info, [Path(p) for p in segment_paths], temporary_path, format_name, metadata or {}
        )
        written, start_shift = _verify(info, temporary_path, output_path, format_name)
        os.replace(temporary_path, output_path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
    return AssembleReport(
        output_path=str(output_path),
        frame_count=written.frame_count,
        duration_seconds=written.duration_seconds,
        byte_size=output_path.stat().st_size,
        audio_packets_copied=audio_packets,
        dts_adjusted_packets=dts_adjusted,
        start_shift_seconds=float(start_shift),
        subtitle_streams_copied=len(subtitles.copied),
        subtitle_streams_dropped=subtitles.dropped,
        timecode=written.timecode,
    )


def expected_colour(info: VideoInfo, pix_fmt: str) -> ColourTags:
    """The colour tags an output coded in `pix_fmt` must carry for `info`'s input."""
    if not pix_fmt:
        return ColourTags.of(info)
    return output_colour_tags(ColourTags.of(info), pix_fmt=pix_fmt)


def output_timecode(info: VideoInfo) -> str | None:
    """The start timecode to write for `info`'s video (None: it has none, or one that is not a
    valid label at its rate, which the muxer would refuse)."""
    if not info.timecode:
        return None
    try:
        timecode = parse_timecode(info.timecode)
        timecode_to_frames(timecode, info.average_rate)
    except MediaError:
        return None
    return timecode.text


def _write(
    info: VideoInfo,
    segment_paths: list[Path],
    temporary_path: Path,
    format_name: str,
    metadata: Mapping[str, str],
) -> tuple[int, int, _SubtitlePlan]:
    """Mux everything into `temporary_path`; returns (audio packets, dts-adjusted packets,
    which subtitle streams went in)."""
    with _open_segment(segment_paths[0]) as first_segment:
        template_stream = first_segment.streams.video[0]
        reference = _CodecSignature.of(template_stream)
    join_stats = _JoinStats()
    with ExitStack() as stack:
        time_bases = [reference.time_base] + [
            audio.time_base for audio in info.audio_streams if audio.time_base]
        try:
            output = stack.enter_context(av.open(
                str(temporary_path), "w", format=format_name,
                options=mp4_muxer_options(format_name, time_bases)))
        except (av.error.FFmpegError, OSError) as error:
            raise OutputError(
                f"Cannot write output file {str(temporary_path)!r} ({error})"
            ) from error

        with open_input(info.path) as source:
            for key, value in source.metadata.items():
                if key not in _MUXER_OWNED_TAGS:
                    output.metadata[key] = value
            subtitles = _SubtitlePlan.of(source, format_name)
        output.metadata.update(metadata)

        first_segment = stack.enter_context(_open_segment(segment_paths[0]))
        segment_video = first_segment.streams.video[0]
        out_video = output.add_stream_from_template(segment_video)
        out_video.time_base = segment_video.time_base
        if format_name in ("mp4", "mov") and segment_video.codec_tag:
            # The sample entry names ProRes' profile (ap4h = 4444, apch = 422 HQ) and HEVC's
            # parameter-set layout (hvc1): without it the muxer would pick apch/hev1.
            out_video.codec_tag = segment_video.codec_tag
        # The container's colour description (colr atom, Matroska Colour) from the source,
        # not from the segment's container: a range alone (tv, with the rest unspecified) is
        # not signalled in an H.264 bitstream, so it only survives as a container tag.
        tags = expected_colour(info, segment_video.codec_context.pix_fmt or "")
        context = out_video.codec_context
        context.color_range = tags.range
        context.colorspace = tags.matrix
        context.color_primaries = tags.primaries
        context.color_trc = tags.transfer
        timecode = output_timecode(info)
        if timecode is not None:
            # The tmcd track counts at the stream's frame rate, which a template lacks.
            out_video.codec_context.framerate = info.average_rate
            out_video.metadata["timecode"] = timecode
        if info.rotation and hasattr(out_video, "set_display_rotation"):
            # PyAV >= 18 only; older PyAV cannot write the display matrix.
            out_video.set_display_rotation(info.rotation)

        streams: list[Iterator[_Timed]] = [
            _segment_video_packets(info, segment_paths, reference, out_video, join_stats)
        ]
        audio_outputs: set[int] = set()  # id() of the output audio streams
        for audio_info in info.audio_streams:
            out_audio, packets = _copy_stream(stack, output, info.path, audio_info.index)
            audio_outputs.add(id(out_audio))
            streams.append(packets)
        for index in subtitles.copied:
            streams.append(_copy_stream(stack, output, info.path, index)[1])

        audio_packets = 0
        try:
            for _, packet, out_stream in heapq.merge(*streams, key=lambda item: item[0]):
                packet.stream = out_stream
                output.mux(packet)
                if id(out_stream) in audio_outputs:
                    audio_packets += 1
        except av.error.FFmpegError as error:
            raise MediaError(f"Cannot write {str(temporary_path)!r} ({error})") from error
    return audio_packets, join_stats.dts_adjusted, subtitles


def _codec_id_name(stream: av.stream.Stream) -> str:
    """FFmpeg's name of the stream's codec id (`subrip`), not of its decoder (`srt`)."""
    return str(stream.codec_context.codec.canonical_name)


def _copy_stream(
    stack: ExitStack, output: av.container.OutputContainer, source_path: str, index: int
) -> tuple[av.stream.Stream, Iterator[_Timed]]:
    """Add a copy of source stream `index` (codec, time base, tags, disposition) to `output`.

    Returns:
        The output stream and the source's packets for it, timed for merging. Each copied
        stream gets a demuxer of its own: each yields its packets in time order, and merging
        sorted iterators needs no buffering.
    """
    source = stack.enter_context(open_input(source_path))
    in_stream = source.streams[index]
    out_stream = output.add_stream_from_template(in_stream)
    out_stream.time_base = in_stream.time_base
    for key, value in in_stream.metadata.items():
        if key in _STREAM_TAGS:
            out_stream.metadata[key] = value
    out_stream.disposition = in_stream.disposition
    return out_stream, _timed(_data_packets(source.demux(in_stream)), out_stream)


@dataclass(frozen=True)
class _SubtitlePlan:
    """The source's subtitle streams: those the output container holds, and those it cannot."""

    copied: tuple[int, ...]
    """Stream indices in the source."""
    dropped: tuple[str, ...]
    """Codec names."""

    @classmethod
    def of(cls, source: av.container.InputContainer, format_name: str) -> _SubtitlePlan:
        allowed = SUBTITLE_CODECS.get(format_name, frozenset())
        streams = list(source.streams.subtitles)
        return cls(
            copied=tuple(s.index for s in streams if _codec_id_name(s) in allowed),
            dropped=tuple(_codec_id_name(s) for s in streams
                          if _codec_id_name(s) not in allowed),
        )


_Timed = tuple[Fraction, av.Packet, av.stream.Stream]
"""A packet, its decode time in seconds and the output stream it goes to."""


@dataclass
class _JoinStats:
    dts_adjusted: int = 0


@dataclass(frozen=True)
class _CodecSignature:
    """What must be equal between segments for their packets to form one stream."""

    codec_name: str
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    extradata: bytes

    @classmethod
    def of(cls, stream: av.stream.Stream) -> _CodecSignature:
        context = stream.codec_context
        return cls(
            codec_name=context.name,
            width=getattr(context, "width", 0),
            height=getattr(context, "height", 0),
            pix_fmt=getattr(context, "pix_fmt", None) or "",
            time_base=Fraction(stream.time_base or 0),
            extradata=bytes(context.extradata or b""),
        )

    def differences(self, other: _CodecSignature) -> str:
        names = [
            name
            for name in ("codec_name", "width", "height", "pix_fmt", "time_base", "extradata")
            if getattr(self, name) != getattr(other, name)
        ]
        return ", ".join(
            f"{name} {getattr(other, name)!r} vs {getattr(self, name)!r}"
            if name != "extradata"
            else "codec extradata (SPS/PPS) differs"
            for name in names
        )


def _segment_video_packets(
    info: VideoInfo,
    segment_paths: list[Path],
    reference: _CodecSignature,
    out_stream: av.stream.Stream,
    join_stats: _JoinStats,
) -> Iterator[_Timed]:
    """Video packets of all segments in order, with dts strictly increasing across joins.

    Each segment starts a fresh x264 encoder, which gives its first packets dts below the first
    pts (by the B-frame reorder delay, extrapolated from the following frames' pts). In CFR this
    lands after the previous segment's last dts, but in VFR, when the frames after a join are
    spaced wider than those before it, the new dts can fall at or below the previous one, which
    MP4 rejects. Raising such a dts to previous + 1 tick is always possible (the segment's first
    pts is later than any earlier frame, and its leading packets all have pts >= that) and
    changes nothing a decoder uses: decode order is the packet order.
    """
    durations = dict(zip(info.frame_pts, info.frame_durations, strict=False))
    time_base = reference.time_base
    frame_number = 0
    last_dts: int | None = None
    for path in segment_paths:
        with _open_segment(path) as segment:
            stream = segment.streams.video[0]
            signature = _CodecSignature.of(stream)
            if signature != reference:
                raise MediaError(
                    f"Segment {str(path)!r} was encoded differently from "
                    f"{str(segment_paths[0])!r} ({reference.differences(signature)}); "
                    "all segments of a video need the same encoder settings"
                )
            if (signature.width, signature.height) != (info.width, info.height):
                raise MediaError(
                    f"Segment {str(path)!r} is {signature.width}x{signature.height}, "
                    f"the source {info.path!r} is {info.width}x{info.height}"
                )
            segment_frames = 0
            try:
                for packet in _data_packets(segment.demux(stream)):
                    if packet.pts is None:
                        raise MediaError(f"Packet without pts in segment {str(path)!r}")
                    # Give every packet the source frame's duration: MP4 takes the last
                    # frame's duration from it, and with it the video's duration.
                    source_ticks = packet.pts * time_base / info.time_base
                    duration = durations.get(int(source_ticks), 0)
                    if duration and source_ticks.denominator == 1:
                        packet.duration = int(duration * info.time_base / time_base)
                    dts = packet.dts if packet.dts is not None else packet.pts
                    if last_dts is not None and dts <= last_dts:
                        dts = last_dts + 1
                        join_stats.dts_adjusted += 1
                    packet.dts = dts
                    last_dts = dts
                    frame_number += 1
                    segment_frames += 1
                    yield dts * time_base, packet, out_stream
            except av.error.FFmpegError as error:
                raise MediaError(f"Cannot read segment {str(path)!r} ({error})") from error
            if segment_frames == 0:
                raise MediaError(f"Segment {str(path)!r} holds no video frames")
    if frame_number != info.frame_count:
        raise MediaError(
            f"Segments hold {frame_number} frames but {info.path!r} has {info.frame_count}"
        )


def _timed(packets: Iterator[av.Packet], out_stream: av.stream.Stream) -> Iterator[_Timed]:
    """Pair source packets with their decode time in seconds (pts when dts is unknown)."""
    last = Fraction(0)
    for packet in packets:
        timestamp = packet.dts if packet.dts is not None else packet.pts
        if timestamp is not None and packet.time_base is not None:
            last = timestamp * Fraction(packet.time_base)
        yield last, packet, out_stream


def _data_packets(packets: Iterator[av.Packet]) -> Iterator[av.Packet]:
    """Skip the empty packets PyAV's demuxer yields to flush decoders at end of stream."""
    for packet in packets:
        if packet.size:
            yield packet


def _open_segment(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise MediaError(f"Segment not found: {str(path)!r}")
    try:
        return av.open(str(path), "r")
    except av.error.FFmpegError as error:
        raise MediaError(f"Not a readable segment: {str(path)!r} ({error})") from error


_NO_RERUN = "Rerunning the same command would fail the same way."


def _verify(
    info: VideoInfo, written_path: Path, output_path: Path, format_name: str
) -> tuple[VideoInfo, Fraction]:
    """Re-probe the written file and check it against the source (invariants 1, 2 and 7).

    Returns:
        The probe of the written file and the uniform start shift in seconds (see
        `AssembleReport.start_shift_seconds`).

    Raises:
        VerificationError: the written file differs; the message says what to change.
    """
    where = f"assembled {str(output_path)!r}"
    try:
        written = probe_video(written_path)
    except MediaError as error:
        raise VerificationError(f"Verification of {where} failed: {error}") from error
    if written.frame_count != info.frame_count:
        raise VerificationError(
            f"Verification of {where} failed: {written.frame_count} frames, "
            f"source has {info.frame_count}. {_NO_RERUN}"
        )
    # Compare in seconds. Where the output's time base cannot hold the source's ticks exactly
    # (Matroska counts milliseconds) allow the muxer's rounding, half a tick.
    exact = (info.time_base / written.time_base).denominator == 1
    tolerance = Fraction(0) if exact else written.time_base / 2
    start_shift = Fraction(0)
    if format_name == "matroska":
        shift = written.frame_pts[0] * written.time_base - info.frame_pts[0] * info.time_base
        if abs(shift) > tolerance:
            # A real shift (negative audio start) measured on a rounded first frame: each
            # later frame may then differ by two roundings, a whole tick.
            start_shift, tolerance = shift, written.time_base
    pairs = zip(info.frame_pts, written.frame_pts, strict=True)
    for index, (source_pts, written_pts) in enumerate(pairs):
        offset = abs(source_pts * info.time_base + start_shift - written_pts * written.time_base)
        if offset > tolerance:
            remedy = ("write .mov or .mp4, whose time base is the source's"
                      if format_name == "matroska" else
                      f"the {format_name} muxer could not keep time base {info.time_base}: "
                      "write .mov or .mkv")
            raise VerificationError(
                f"Verification of {where} failed: frame {index} is at "
                f"{float(written_pts * written.time_base):.6f} s, source at "
                f"{float(source_pts * info.time_base):.6f} s (output time base "
                f"{written.time_base}, source {info.time_base}); {remedy}. {_NO_RERUN}"
            )
    source_counts = [a.packet_count for a in info.audio_streams]
    written_counts = [a.packet_count for a in written.audio_streams]
    if source_counts != written_counts:
        raise VerificationError(
            f"Verification of {where} failed: audio packets {written_counts}, "
            f"source has {source_counts}; write .mkv, which holds every audio codec. "
            f"{_NO_RERUN}"
        )
    if written.rotation != info.rotation and hasattr(av.VideoStream, "set_display_rotation"):
        raise VerificationError(
            f"Verification of {where} failed: rotation {written.rotation}, "
            f"source has {info.rotation}; write .mp4 or .mov. {_NO_RERUN}"
        )
    expected = expected_colour(info, written.pix_fmt)
    found = ColourTags.of(written)
    if found != expected:
        raise VerificationError(
            f"Verification of {where} failed: colour tags {found} but the source needs "
            f"{expected}; write .mov or .mkv, which store them in the container. {_NO_RERUN}"
        )
    expected_timecode = output_timecode(info)
    if expected_timecode is not None and written.timecode != expected_timecode:
        raise VerificationError(
            f"Verification of {where} failed: start timecode {written.timecode!r}, source "
            f"has {expected_timecode!r}; write .mov, which keeps it in a tmcd track. "
            f"{_NO_RERUN}"
        )
    return written, start_shift

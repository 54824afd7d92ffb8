"""`fusionray models list | pull NAME... | verify [NAME...] | import NAME FILE`.

    list      what the catalogue holds and where a verified copy is (shared folder, cache)
    pull      download (resumable, mirrors in order) and verify into the cache; --all for all
    verify    re-check local copies; exit 1 if any is corrupt or not the published file
    import    copy a model file you already have into the cache, after checking its bytes and
              its graph contract (machines without internet: pull elsewhere, copy, import);
              --allow-unverified for a file that is none of the published releases
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fusionray.errors import FusionrayError

if TYPE_CHECKING:  # the store imports pooch: loaded only by the commands that need it
    from fusionray.models.store import Provenance

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

Handler = Callable[[argparse.Namespace], int]


def _cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="model cache folder (default: $FUSIONRAY_CACHE or "
                             "~/.cache/fusionray/models)")
    parser.add_argument("--shared-dir", type=Path, action="append", default=None,
                        help="read-only model folder searched before the cache (repeatable; "
                             "default: $FUSIONRAY_SHARED_MODELS)")


def _allow_unverified_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-unverified", action="store_true",
                        help="accept a file that matches none of the model's published releases "
                             "(a fine-tuned or re-converted export); it is still reported")


def models_list(args: argparse.Namespace) -> int:
    """Print every catalogued model, its role, size, licence and where a verified copy is
    (saying when that copy is not the published file)."""
    from fusionray.models.catalog import MODELS
    from fusionray.models.store import check_published, find_model

    print(f"{'name':<20} {'role':<10} {'input':>5}  {'status':<34} licence")
    for name, spec in sorted(MODELS.items()):
        try:
            found = find_model(name, cache_dir=args.cache_dir, shared_dirs=args.shared_dir,
                               allow_unverified=True)
        except FusionrayError as error:
            status = f"error: {error}"
        else:
            status = f"{found.where} ({found.check})" if found else "not downloaded"
            if found:
                status += _provenance_note(check_published(spec, found.path))
        print(f"{name:<20} {spec.role:<10} {spec.input_size:>5}  {status:<34} {spec.license}")
    return EXIT_OK


def _provenance_note(provenance: Provenance) -> str:
    """What `check_published` found, in the store's own words: "published (release)",
    "unpinned: why", or "not the published file: what differs"."""
    from fusionray.models.store import NOT_PUBLISHED, PUBLISHED, UNPINNED

    if provenance.status == PUBLISHED:
        return f"; {PUBLISHED} ({provenance.release})"
    if provenance.status == UNPINNED:
        return f"; {UNPINNED}: {provenance.detail}"
    how = ", imported with --allow-unverified" if provenance.accepted else ""
    return f"; {NOT_PUBLISHED}{how}: {provenance.detail}"


def models_pull(args: argparse.Namespace) -> int:
    """Download and verify the named models (all with --all)."""
    from fusionray.models.catalog import MODELS, get_model_spec
    from fusionray.models.store import locate_model

    names = sorted(MODELS) if args.all else args.names
    if not names:
        print("fusionray: error: name at least one model, or pass --all", file=sys.stderr)
        return EXIT_BAD_INPUT
    for name in names:
        try:
            get_model_spec(name)  # Fail on a typo before downloading anything.
        except FusionrayError as error:
            print(f"fusionray: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
    for name in names:
        found = locate_model(name, cache_dir=args.cache_dir, shared_dirs=args.shared_dir,
                             offline=False, allow_unverified=args.allow_unverified)
        print(f"{name}: {found.path} ({found.where}, verified by {found.check})")
    return EXIT_OK


def models_verify(args: argparse.Namespace) -> int:
    """Re-check the local copies of the named models (default: all); exit 1 if any is bad."""
    from fusionray.models.catalog import MODELS, get_model_spec
    from fusionray.models.store import (
        NOT_PUBLISHED,
        check_published,
        default_cache_dir,
        default_shared_dirs,
        verify_model_file,
    )

    names = args.names or sorted(MODELS)
    folders = [*(args.shared_dir or default_shared_dirs()), args.cache_dir or default_cache_dir()]
    bad = 0
    for name in names:
        spec = get_model_spec(name)
        copies = [folder / spec.filename for folder in folders
                  if (folder / spec.filename).is_file()]
        if not copies:
            print(f"{name}: not downloaded")
            continue
        for path in copies:
            try:
                check = verify_model_file(spec, path)
            except FusionrayError as error:
                bad += 1
                print(f"{name}: BAD {error}")
                continue
            provenance = check_published(spec, path)
            if provenance.status == NOT_PUBLISHED and not (
                    provenance.accepted or args.allow_unverified):
                bad += 1
                print(f"{name}: BAD {path} is intact ({check}) but not the published file: "
                      f"{provenance.detail}")
            else:
                print(f"{name}: ok {path} ({check}{_provenance_note(provenance)})")
    return EXIT_FAILED if bad else EXIT_OK


def models_import(args: argparse.Namespace) -> int:
    """Copy a model file into the cache after checking its bytes and its graph contract."""
    from fusionray.models.store import import_model

    path = import_model(args.name, args.file, cache_dir=args.cache_dir,
                        allow_unverified=args.allow_unverified)
    print(f"{args.name}: imported to {path}")
    return EXIT_OK


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `fusionray models ...` on the top-level parser."""
    models = subparsers.add_parser("models", help="list, pull, verify and import model files")
    models.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="catalogued models and their local copies")
    _cache_options(listing)
    listing.set_defaults(handler=_guarded(models_list))
    pull = actions.add_parser("pull", help="download and verify models into the cache")
    pull.add_argument("names", nargs="*", metavar="NAME")
    pull.add_argument("--all", action="store_true", help="every catalogued model")
    _cache_options(pull)
    _allow_unverified_option(pull)
    pull.set_defaults(handler=_guarded(models_pull))
    verify = actions.add_parser("verify", help="re-check local copies (default: all models)")
    verify.add_argument("names", nargs="*", metavar="NAME")
    _cache_options(verify)
    _allow_unverified_option(verify)
    verify.set_defaults(handler=_guarded(models_verify))
    importing = actions.add_parser("import", help="copy a model file you have into the cache")
    importing.add_argument("name", metavar="NAME")
    importing.add_argument("file", type=Path, metavar="FILE")
    _cache_options(importing)
    _allow_unverified_option(importing)
    importing.set_defaults(handler=_guarded(models_import))


def _guarded(handler: Handler) -> Handler:
    """Run a handler with logging set up; a FusionrayError is a one-line message and exit code."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        try:
            return handler(args)
        except FusionrayError as error:
            print(f"fusionray: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT if isinstance(error, ValueError) else EXIT_FAILED

    return run

"""The committed type stub of the generated module is the one `stubgen.py` writes for the
module installed now: a facade change that did not regenerate it fails here."""

import importlib.util
import sys
from pathlib import Path

import syncline._native.syncline_ffi as generated

PACKAGE = Path(__file__).resolve().parent.parent


def test_the_type_stub_matches_the_generated_module() -> None:
    spec = importlib.util.spec_from_file_location("stubgen", PACKAGE / "stubgen.py")
    assert spec is not None and spec.loader is not None
    stubgen = importlib.util.module_from_spec(spec)
    sys.modules["stubgen"] = stubgen
    spec.loader.exec_module(stubgen)
    source = Path(generated.__file__).read_text(encoding="utf-8")
    committed = PACKAGE / "python/syncline/_native/syncline_ffi.pyi"
    assert stubgen.stub(source) == committed.read_text(encoding="utf-8"), (
        "the type stub is out of date: `cargo xtask bindings` rewrites it; commit the result"
    )

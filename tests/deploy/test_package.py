"""The release packages scripts/package.sh leaves in dist/: what each platform runs, and a
binary that starts where it is deployed.

- every binary needs no glibc symbol newer than 2.31 (Azure Functions' Linux workers; Lambda's
  provided.al2023 has 2.34), read from its dynamic symbol table with objdump -T;
- every binary is stripped (no symbol table, no debug sections);
- dist/lambda/<fn>.zip holds exactly `bootstrap`, executable;
- dist/azure/<fn>.zip holds host.json (the app's own infra/azure/<fn>-host.json when there
  is one: query's, which forwards HTTP requests at /v1/...), the app's function.json folders
  and `handler`, executable, with the same bytes as the binary;
- dist/SHA256SUMS matches the files;
- a rebuild of the same commit gives the same binary, byte for byte.

The sizes are printed (pytest -s, or in the summary of scripts/test.sh).
"""

import hashlib
import json
import os
import re
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"
FUNCTIONS = ["ingest", "transform", "rollup", "fanout", "query"]
GLIBC_FLOOR = (2, 31)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: run scripts/package.sh first")
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def glibc_versions(binary: Path) -> set:
    out = subprocess.run(
        ["objdump", "-T", str(binary)], check=True, capture_output=True, text=True
    ).stdout
    return {tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_([0-9.]+)", out)}


def section_names(binary: Path) -> set:
    out = subprocess.run(
        ["objdump", "-h", str(binary)], check=True, capture_output=True, text=True
    ).stdout
    return set(re.findall(r"^\s*\d+\s+(\.\S+)", out, re.M))


def app_folders(fn: str) -> list:
    azure = ROOT / "infra" / "azure"
    return sorted(
        d.name
        for d in azure.iterdir()
        if (d / "function.json").is_file() and (d.name == fn or d.name.startswith(fn + "-"))
    )


def host_file(fn: str) -> Path:
    """scripts/package.sh's rule: infra/azure/<fn>-host.json when there is one, else host.json."""
    own = ROOT / "infra" / "azure" / f"{fn}-host.json"
    return own if own.is_file() else ROOT / "infra" / "azure" / "host.json"


def unix_mode(info: zipfile.ZipInfo) -> int:
    return info.external_attr >> 16


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_binary_needs_glibc_2_31_at_most_and_is_stripped(fn):
    binary = need(DIST / "bin" / fn)
    versions = glibc_versions(binary)
    assert versions, f"{fn}: no GLIBC_ symbol versions found; is it dynamically linked?"
    newest = max(versions)
    assert newest <= GLIBC_FLOOR, f"{fn} needs GLIBC_{'.'.join(map(str, newest))}"
    sections = section_names(binary)
    assert ".symtab" not in sections, f"{fn} is not stripped"
    assert not [s for s in sections if s.startswith(".debug")], f"{fn} has debug sections"
    assert os.access(binary, os.X_OK)
    print(f"{fn}: {binary.stat().st_size:,} bytes, newest glibc symbol "
          f"GLIBC_{'.'.join(map(str, newest))}")


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_lambda_zip_holds_an_executable_bootstrap(fn):
    binary = need(DIST / "bin" / fn).read_bytes()
    path = need(DIST / "lambda" / f"{fn}.zip")
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["bootstrap"]
        info = z.getinfo("bootstrap")
        assert stat.S_ISREG(unix_mode(info))
        assert unix_mode(info) & 0o111 == 0o111, oct(unix_mode(info))
        assert z.read("bootstrap") == binary
    print(f"{fn}: lambda zip {path.stat().st_size:,} bytes")


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_azure_zip_is_a_function_app(fn):
    binary = need(DIST / "bin" / fn).read_bytes()
    path = need(DIST / "azure" / f"{fn}.zip")
    folders = app_folders(fn)
    assert folders, f"no infra/azure folder for {fn}"
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
        assert names == sorted(
            ["host.json", "handler"] + [f"{d}/function.json" for d in folders]
        )
        host = json.loads(z.read("host.json"))
        assert z.read("host.json") == host_file(fn).read_bytes()
        # The host starts what defaultExecutablePath names, from the app's root.
        assert host["customHandler"]["description"]["defaultExecutablePath"] == "handler"
        assert host["version"] == "2.0"
        # Only query's requests are forwarded as they are (an HTTP trigger at /v1/..., not
        # /api/v1/...); the queue and timer functions get the invocation envelope.
        forwarding = host["customHandler"].get("enableForwardingHttpRequest", False)
        assert forwarding is (fn == "query")
        if fn == "query":
            assert host["extensions"]["http"]["routePrefix"] == ""
            bindings = json.loads(z.read("query/function.json"))["bindings"]
            assert [(b["type"], b["direction"]) for b in bindings] == [("httpTrigger", "in"), ("http", "out")]
            assert bindings[0]["authLevel"] == "anonymous" and bindings[0]["route"] == "{*path}"
        assert unix_mode(z.getinfo("handler")) & 0o111 == 0o111
        assert z.read("handler") == binary
        for d in folders:
            packaged = json.loads(z.read(f"{d}/function.json"))
            committed = json.loads((ROOT / "infra" / "azure" / d / "function.json").read_text())
            assert packaged == committed
            assert packaged["bindings"], f"{d}: no bindings"
    print(f"{fn}: azure zip {path.stat().st_size:,} bytes ({', '.join(folders)})")


def test_sha256sums_match_the_files():
    sums = need(DIST / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in sums:
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    expected = {f"bin/{f}" for f in FUNCTIONS}
    expected |= {f"lambda/{f}.zip" for f in FUNCTIONS} | {f"azure/{f}.zip" for f in FUNCTIONS}
    assert expected <= set(listed), sorted(expected - set(listed))
    for name, digest in listed.items():
        assert sha256((DIST / name).read_bytes()) == digest, name


def test_a_rebuild_of_the_same_commit_gives_the_same_binary_and_zips():
    """The smallest function's crate is cleaned and packaged again: its whole-program (LTO)
    link runs again from the same inputs. A full rebuild from an empty target directory in
    another checkout was compared by hand (terraform/README.md, Packages)."""
    fn = "ingest"
    before = {
        p: sha256(need(DIST / p).read_bytes())
        for p in (f"bin/{fn}", f"lambda/{fn}.zip", f"azure/{fn}.zip")
    }
    subprocess.run(
        ["cargo", "clean", "--release", "--target", "x86_64-unknown-linux-gnu",
         "-p", f"ferry-{fn}"],
        cwd=ROOT, check=True, capture_output=True,
    )
    subprocess.run(["bash", "scripts/package.sh", fn], cwd=ROOT, check=True,
                   capture_output=True)
    after = {p: sha256((DIST / p).read_bytes()) for p in before}
    assert after == before

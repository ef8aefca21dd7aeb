#!/usr/bin/env bash
# Installs the OpenVINO runtime the local embedding model runs on (Apache-2.0,
# Intel), from the PyPI wheel openvino 2026.4.1, into $1 (default:
# .local/openvino). Only the eight shared libraries the CPU path maps are
# extracted (the C API, the core, the CPU plugin, the IR reader, oneTBB and
# hwloc: about 87 MB) with the wheel's licence files; no Python code is
# installed or run. Idempotent: libraries already in place with the right
# checksums are kept, so it works offline after the first run.
#
# doculearn loads libopenvino_c.so.2641 from there at start-up
# (embedding.openvino_dir); without it the daemon says so in one line and
# embeds with its built-in (slower) encoder.
set -euo pipefail
cd "$(dirname "$0")/.."

dest="${1:-${DOCULEARN_DATA_DIR:-$PWD/.local}/openvino}"
version="2026.4.1"
wheel_name="openvino-2026.4.1-22982-cp311-cp311-manylinux_2_28_x86_64.whl"
wheel_sha="2d22b1da03f7caf74df30e9f6417d0ab2f637e4a38e08e1dcd294d2c37407aaf"
declare -A want=(
  [libopenvino_c.so.2641]=d2d0836d422b21fc5da2739af0d6035df3fc6dd5e4756402eb848974edecf8a5
  [libopenvino.so.2641]=9b9a80ac1f18e07b13ed54459d9a865bcfe9dc170dbf8fe740c2974b85ecedc1
  [libopenvino_intel_cpu_plugin.so]=6599e3dd300d047b5ed72f8e48101c5f312c25321f35f57f803641ff8372900b
  [libopenvino_ir_frontend.so.2641]=554e9fd3d4a0fbc587c14379464b2324e24b8ea736cfb749ad2cd9e74dfc09e0
  [libtbb.so.12]=ac9518497a4f2cb6729792730f145ee58367316031511923fef263c9ac81ca61
  [libtbbmalloc.so.2]=0cccbdb4783bf190da19b34540fb7f749b0955ec1982d7ac8e5f398365399895
  [libtbbbind_2_5.so.3]=179ebd1223abd20a461dc978f24090d7ef7c1308b8dff14e4adfe4a21d75543f
  [libhwloc.so.15]=e91be9f5bc1c87aadb08f2e19ebcb742979adda0a5434f72650a154e317e7fb1
)

ok() {
  for f in "${!want[@]}"; do
    [ -f "$dest/$f" ] || return 1
    [ "$(sha256sum "$dest/$f" | cut -d' ' -f1)" = "${want[$f]}" ] || return 1
  done
}

if ok; then
  echo "openvino: runtime $version already installed in $dest"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "openvino: downloading $wheel_name from PyPI"
# The wheel for CPython 3.11 on manylinux_2_28 whatever this machine's Python
# is: only its shared libraries are used, and they do not depend on Python.
python3 -m pip download --quiet --no-deps --only-binary :all: \
  --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
  -d "$tmp" "openvino==$version"
got=$(sha256sum "$tmp/$wheel_name" | cut -d' ' -f1)
[ "$got" = "$wheel_sha" ] || { echo "openvino: wheel checksum mismatch ($got)" >&2; exit 1; }

mkdir -p "$dest"
python3 - "$tmp/$wheel_name" "$dest" "${!want[@]}" <<'PY'
import os, sys, zipfile
wheel, dest, names = sys.argv[1], sys.argv[2], set(sys.argv[3:])
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("openvino/libs/") and base in names:
            target = os.path.join(dest, base)
        elif "/licenses/" in name and name.endswith((".txt", "LICENSE")):
            target = os.path.join(dest, "licenses", base)
        else:
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        part = target + ".part"
        with z.open(name) as src, open(part, "wb") as out:
            out.write(src.read())
        os.chmod(part, 0o755 if base.startswith("lib") else 0o644)
        os.replace(part, target)
PY
cat > "$dest/NOTICE" <<TXT
OpenVINO runtime $version (Apache-2.0, Intel Corporation) with oneTBB and
hwloc, from the PyPI wheel $wheel_name, installed by doculearn's
scripts/install-openvino.sh. Licences and third-party notices: licenses/.
TXT
ok || { echo "openvino: extracted libraries do not match their checksums" >&2; exit 1; }
echo "openvino: installed runtime $version into $dest ($(du -sh "$dest" | cut -f1))"

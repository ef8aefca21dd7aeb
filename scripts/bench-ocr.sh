#!/usr/bin/env bash
# OCR speed and memory on this machine (figures only): one OCR child per page
# as the daemon runs it (`doculearn ocr-worker`: pdftoppm + tesseract at
# 300 dpi), first alone, then while the local embedding model runs its own
# benchmark on all cores (what a busy daemon looks like).
#
#   bash scripts/bench-ocr.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
command -v /usr/bin/time >/dev/null 2>&1 || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
bash scripts/setup.sh >/dev/null
cargo build --release --quiet --bin doculearn
bin=target/release/doculearn
corpus=${DOCULEARN_CORPUS:-../shared/corpus}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Pages: the corpus's real scan, and five prose pages of the gnuplot manual
# made into images (what a scanner would give).
cp "$corpus/scan-huckfinn-page-image-only.pdf" "$work/scan.pdf"
for p in 22 23 24 25 26; do
  pdftoppm -f $p -l $p -r 300 -gray -png -singlefile "$corpus/gnuplot-manual.pdf" "$work/page$p"
done

run_pages() {
  local label=$1 start end peak=0 n=0
  start=$(date +%s.%N)
  for job in scan.pdf page22.png page23.png page24.png page25.png page26.png; do
    local kind=image; [ "${job##*.}" = pdf ] && kind=pdf
    /usr/bin/time -f "%M" -o "$work/rss" "$bin" ocr-worker \
      --job "{\"kind\":\"$kind\",\"page\":1,\"languages\":\"eng\",\"dpi\":300,\"timeout_secs\":120}" \
      --memory-mb 256 --cpu-secs 240 < "$work/$job" > "$work/out.json"
    grep -q '"ok"' "$work/out.json" || { echo "OCR failed on $job: $(cat "$work/out.json")"; exit 1; }
    local rss; rss=$(tail -1 "$work/rss"); [ "$rss" -gt "$peak" ] && peak=$rss
    n=$((n + 1))
  done
  end=$(date +%s.%N)
  awk -v l="$label" -v n=$n -v s="$start" -v e="$end" -v p="$peak" \
    'BEGIN { t = e - s; printf "%s: %d pages in %.1f s = %.2f pages/s, %.2f s a page; peak RSS of the OCR child %.0f MB\n", l, n, t, n / t, t / n, p / 1024 }'
}

run_pages "OCR alone"
cargo build --release --quiet -p minilm --example bench
( while true; do target/release/examples/bench "" bf16 >/dev/null 2>&1 || true; done ) &
embedder=$!
trap 'kill $embedder 2>/dev/null; rm -rf "$work"' EXIT
sleep 3
run_pages "OCR while the embedding model runs"
kill $embedder 2>/dev/null || true

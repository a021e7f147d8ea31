#!/usr/bin/env bash
# A screenshot of DVC's plots report in headless Chromium, with vega from a local copy (the
# report loads it from a CDN, which machines without internet cannot reach).
#   bash docs/screenshot.sh OUT.png HEIGHT show [targets...]        # dvc plots show
#   bash docs/screenshot.sh OUT.png HEIGHT diff REV... [--targets ...]  # dvc plots diff
# Needs Debian's chromium and npm (for `npm pack vega vega-lite vega-embed`, once).
set -euo pipefail
out=$(realpath -m "$1"); height=$2; verb=$3; shift 3
cd "$(dirname "$0")/.."
vega=${VEGA_DIR:-${TMPDIR:-/var/tmp}/vega-local}
if [ ! -f "$vega/vega-embed.min.js" ]; then
  mkdir -p "$vega" && (cd "$vega" && npm pack -q vega@5 vega-lite@5 vega-embed@6 >/dev/null &&
    for f in *.tgz; do tar xzf "$f" --strip-components=2 --wildcards '*/build/*.min.js'; done)
fi
page=$(mktemp -d)
sed 's/{scripts}/<script src="vega.min.js"><\/script><script src="vega-lite.min.js"><\/script><script src="vega-embed.min.js"><\/script>/' \
  > "$page/template.html" <<'HTML'
<!DOCTYPE html>
<html><head><title>DVC Plot</title>{scripts}
<style>table { border-spacing: 15px; } body { font-family: sans-serif; }</style></head>
<body>{plot_divs}</body></html>
HTML
dvc plots "$verb" "$@" --html-template "$page/template.html" -o "$page/report" >/dev/null
cp "$vega"/vega*.min.js "$page/report/"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$page/profile" \
  --hide-scrollbars --virtual-time-budget=5000 --window-size=1400,"$height" \
  --screenshot="$out" "file://$page/report/index.html" 2>/dev/null
rm -rf "$page"
echo "screenshot: $out"

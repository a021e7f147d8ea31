#!/usr/bin/env bash
# Builds offline.html: the page `dvc plots show` and `dvc plots diff` write, with Vega, Vega-Lite
# and vega-embed inlined from their npm packages at the versions pinned here, so the charts draw
# with no network (.dvc/config: plots.html_template). Rerun it (it needs npm) after a pin changes.
set -euo pipefail
cd "$(dirname "$0")"
PINS=(vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0)   # vega-lite 5: DVC's templates' schema
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "${PINS[@]}" >/dev/null)
script() {    # one package's minified build, as an inline script with its name and licence
    local pin=$1 file=$2 dir="$tmp/${1/@/-}"
    mkdir -p "$dir" && tar xzf "$tmp/${1/@/-}.tgz" -C "$dir"
    if grep -qi '</script' "$dir/package/build/$file"; then
        echo "build-offline: $pin's $file holds '</script'; it cannot be inlined" >&2; exit 1
    fi
    printf '<script>/* %s (%s licence), build/%s */\n' "$pin" \
        "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["license"])' \
           "$dir/package/package.json")" "$file"
    cat "$dir/package/build/$file"
    printf '\n</script>\n'
}
{
    printf '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n{refresh_tag}\n'
    printf '<title>DVC plots</title>\n'
    script "${PINS[0]}" vega.min.js
    script "${PINS[1]}" vega-lite.min.js
    script "${PINS[2]}" vega-embed.min.js
    printf '<style>\nbody { font-family: sans-serif; }\ntable { border-spacing: 15px; }\n</style>\n'
    printf '</head>\n<body>\n{plot_divs}\n</body>\n</html>\n'
} > offline.html.tmp
mv offline.html.tmp offline.html
echo "build-offline: wrote $(pwd)/offline.html ($(wc -c < offline.html) bytes)"

#!/bin/sh
# Fetches the built OHIF viewer (the `dist/` folder of the npm package @ohif/app, an exact
# version) into DEST/dist, with npm (the registry's ordinary client; no browser, nothing built).
# Idempotent: DEST/.VERSION.stamp records a complete fetch, and a second run does nothing.
#   sh deploy/viewer/fetch-ohif.sh 3.13.2 .cache/ohif
set -eu
version="$1"
dest="$2"
stamp="$dest/.$version.stamp"
[ -f "$stamp" ] && exit 0
if ! command -v npm >/dev/null 2>&1; then
    echo "fetching OHIF needs npm (Debian: apt-get install npm)" >&2
    exit 1
fi
mkdir -p "$dest"
work=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "fetching OHIF @ohif/app@$version (about 50 MB) into $dest/dist"
(cd "$work" && npm pack --silent "@ohif/app@$version" >/dev/null)
tar -xzf "$work"/ohif-app-"$version".tgz -C "$work" package/dist
# Replace the previous version whole: a half-extracted folder never carries the final name.
rm -rf "$dest/dist" "$dest"/.*.stamp
mv "$work/package/dist" "$dest/dist"
touch "$stamp"

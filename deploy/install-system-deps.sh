#!/bin/sh
# Installs the Debian packages the test suite talks to (DCMTK, dicom3tools, Orthanc, Orthanc's
# DICOMweb plugin and Chromium for the viewer test, deploy/viewer/) when they are missing.
# As root it installs them; otherwise it says what to run.
set -eu
missing=""
command -v /usr/bin/storescu >/dev/null 2>&1 || missing="$missing dcmtk"
command -v /usr/bin/dciodvfy >/dev/null 2>&1 || missing="$missing dicom3tools"
command -v /usr/sbin/Orthanc >/dev/null 2>&1 || command -v Orthanc >/dev/null 2>&1 || missing="$missing orthanc"
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$missing orthanc-dicomweb"
command -v /usr/bin/chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    echo "installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # The orthanc package starts a system service on 4242/8042; the tests start their own.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now orthanc >/dev/null 2>&1 || true; fi
else
    echo "calcnode's tests need these Debian packages:$missing" >&2
    echo "install them with:  sudo apt-get install$missing" >&2
    exit 1
fi

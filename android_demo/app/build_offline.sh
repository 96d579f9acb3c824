#!/usr/bin/env bash
# Offline build check of the demo app with Debian's Android tools (no Gradle, no Google Maven).
#
#   android_demo/app/build_offline.sh
#
# What it does, on a Debian machine with no access to Google's Maven:
#   1. gets the tools: aapt2 (bookworm's `aapt`), android.jar of API 23 (`libandroid-23-java`,
#      Debian unstable) and dx (`dalvik-exchange`, Debian bullseye). The two .debs from other
#      suites are fetched with a private apt state under app/build/offline/apt and unpacked
#      there with dpkg-deb; the system's apt sources are not changed.
#   2. aapt2 compiles and links the resources and the manifest (minSdk 21), generating R.java;
#   3. javac compiles the patch loader and the app against android.jar (Android's API, not
#      the JDK's), every class except MainActivity.java;
#   4. dx converts all of it to DEX for minSdk 21 (dx rejects lambdas below 26).
#
# It does not package an APK. MainActivity.java is the one class that calls LiteRT
# (org.tensorflow.lite.Interpreter); its classes ship only in the LiteRT AAR
# (com.google.ai.edge.litert:litert) on Google's Maven, which cannot be reached here, and
# an APK without them would crash at start. With Google's Maven, use the Gradle build
# (android_demo/settings.gradle). Fake LiteRT stubs are deliberately not used.
set -euo pipefail

APP="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEMO="$(dirname "$APP")"
OUT="$APP/build/offline"
SDK="$OUT/sdk"
ANDROID_JAR="$SDK/usr/share/java/com.android.android-23.jar"
DX_JAR="$SDK/usr/share/java/com.android.dx-10.0.0.jar"
AAPT2=/usr/lib/android-sdk/build-tools/debian/aapt2

log() { printf 'build_offline: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_host_tools() {
    local missing=()
    command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
    [ -x "$AAPT2" ] || missing+=(aapt)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing with apt: ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

fetch_other_suite_debs() {
    [ -f "$ANDROID_JAR" ] && [ -f "$DX_JAR" ] && return
    local apt_dir="$OUT/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$SDK"
    printf '%s\n' "deb http://deb.debian.org/debian unstable main" \
        "deb http://deb.debian.org/debian bullseye main" > "$apt_dir/sources.list"
    local opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::archives=$apt_dir/archives"
        -o "APT::Sandbox::User=root")
    log "fetching libandroid-23-java (unstable) and dalvik-exchange (bullseye) into $apt_dir"
    apt-get "${opts[@]}" update -qq
    (cd "$apt_dir/archives" && apt-get "${opts[@]}" download libandroid-23-java dalvik-exchange >/dev/null)
    for deb in "$apt_dir"/archives/*.deb; do
        dpkg-deb -x "$deb" "$SDK"
    done
    rm -rf "$apt_dir"  # keep only the unpacked jars
}

main() {
    ensure_host_tools
    fetch_other_suite_debs
    rm -rf "$OUT/res" "$OUT/gen" "$OUT/classes" "$OUT/patchloader" "$OUT"/*.dex "$OUT"/*.ap_
    mkdir -p "$OUT/res" "$OUT/gen" "$OUT/classes" "$OUT/patchloader"

    log "aapt2: resources and manifest"
    "$AAPT2" compile --dir "$APP/src/main/res" -o "$OUT/res/compiled.zip"
    local assets=()
    [ -d "$APP/src/main/assets" ] && assets=(-A "$APP/src/main/assets" -0 tflite -0 delta)
    "$AAPT2" link -I "$ANDROID_JAR" --manifest "$APP/src/main/AndroidManifest.xml" \
        --min-sdk-version 21 --target-sdk-version 23 --java "$OUT/gen" "${assets[@]}" \
        -o "$OUT/resources.ap_" "$OUT/res/compiled.zip"

    # -source/-target 8 with android.jar as the boot class path: only Android's API resolves.
    local javac_android=(javac -source 8 -target 8 -encoding UTF-8 -bootclasspath "$ANDROID_JAR"
        -Xlint:all -Xlint:-options -Werror)
    log "javac: patch loader against android.jar (API 23)"
    mapfile -t loader_sources < <(find "$DEMO/patchloader/src/main/java" -name '*.java' | sort)
    "${javac_android[@]}" -d "$OUT/patchloader" "${loader_sources[@]}"

    log "javac: app against android.jar, all classes except the LiteRT-calling MainActivity.java"
    mapfile -t app_sources < <(find "$APP/src/main/java" "$OUT/gen" -name '*.java' ! -name MainActivity.java | sort)
    "${javac_android[@]}" -cp "$OUT/patchloader" -d "$OUT/classes" "${app_sources[@]}"

    log "dx: DEX for minSdk 21"
    java -cp "$DX_JAR" com.android.dx.command.Main --dex --min-sdk-version=21 \
        --output="$OUT/classes.dex" "$OUT/patchloader" "$OUT/classes"

    log "OK: resources linked, $(find "$OUT/classes" "$OUT/patchloader" -name '*.class' | wc -l) classes compiled" \
        "and dexed ($(du -k "$OUT/classes.dex" | cut -f1) KiB) in $OUT"
    log "no APK: MainActivity.java needs the LiteRT AAR from Google's Maven (see the comment at the top)"
}

main "$@"

#!/usr/bin/env bash
# Build the pure-Java patch loader and run its JUnit tests on the host JVM.
#
#   android_demo/build_and_test.sh            # from anywhere; CI calls it from .ci/run
#
# Needs a JDK (javac) and JUnit 4 from Debian. On a fresh Debian machine it installs what is
# missing with apt (root, or sudo); when both are present it touches no package at all.
# Idempotent: it rebuilds android_demo/patchloader/build/ from scratch each time (a few seconds).
# Exit status: 0 when every test passed; non-zero otherwise.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/patchloader"
BUILD="$LIB/build"
CORPUS="$(cd "$HERE/.." && pwd)/tests/corpus"  # the bad-input corpus, shared with the Python suite
JUNIT_JARS=(/usr/share/java/junit4.jar /usr/share/java/hamcrest-core.jar)

log() { printf 'build_and_test: %s\n' "$*" >&2; }

apt_install() { # packages...
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { log "need root or sudo to install: $*"; exit 1; }
        sudo=(sudo)
    fi
    log "installing with apt: $*"
    if [ -z "${APT_UPDATED:-}" ]; then
        "${sudo[@]}" apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_tools() {
    local missing=()
    command -v javac >/dev/null && command -v java >/dev/null || missing+=(openjdk-17-jdk-headless)
    for jar in "${JUNIT_JARS[@]}"; do
        [ -f "$jar" ] || { missing+=(junit4); break; }
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

compile() { # out_dir classpath sources...
    local out="$1" classpath="$2"
    shift 2
    mkdir -p "$out"
    # --release 8: Java 8 language and API (no lambdas: dx rejects them below minSdk 26; and
    # ByteBuffer.position() must bind to Buffer's, as on Android). -Werror: warnings fail the build.
    javac --release 8 -encoding UTF-8 -Xlint:all -Xlint:-options -Werror -d "$out" -cp "$classpath" "$@"
}

main() {
    ensure_tools
    log "$(javac -version 2>&1), JUnit $(dpkg-query -W -f='${Version}' junit4 2>/dev/null || echo '(not from apt)')"
    rm -rf "$BUILD"
    local junit
    junit="$(IFS=:; echo "${JUNIT_JARS[*]}")"

    mapfile -t main_sources < <(find "$LIB/src/main/java" -name '*.java' | sort)
    mapfile -t tool_sources < <(find "$LIB/src/tools/java" -name '*.java' | sort)
    mapfile -t test_sources < <(find "$LIB/src/test/java" -name '*.java' | sort)
    compile "$BUILD/classes" "" "${main_sources[@]}"
    compile "$BUILD/tools" "$BUILD/classes" "${tool_sources[@]}"
    compile "$BUILD/test" "$BUILD/classes:$junit" "${test_sources[@]}"
    (cd "$BUILD/classes" && jar cf "$BUILD/edgepatch-patchloader.jar" .)
    log "built $BUILD/edgepatch-patchloader.jar ($(du -k "$BUILD/edgepatch-patchloader.jar" | cut -f1) KiB)"

    local tests=()
    for source in "${test_sources[@]}"; do
        case "$source" in *Test.java)
            tests+=("dev.edgepatch.patchloader.$(basename "$source" .java)") ;;
        esac
    done
    java -Dedgepatch.testdata="$LIB/testdata" -Dedgepatch.corpus="$CORPUS" -cp "$BUILD/classes:$BUILD/test:$junit" \
        org.junit.runner.JUnitCore "${tests[@]}"

    # The command-line front end the Python test drives, on one float and one int8 golden case.
    local out="$BUILD/cli-smoke.tflite"
    java -cp "$BUILD/classes:$BUILD/tools" dev.edgepatch.patchloader.tools.PatchCli apply \
        "$LIB/testdata/base.tflite" "$LIB/testdata/gamma.delta" "$out" >/dev/null
    cmp "$out" "$LIB/testdata/expected/gamma.tflite"
    java -cp "$BUILD/classes:$BUILD/tools" dev.edgepatch.patchloader.tools.PatchCli apply \
        "$LIB/testdata/base_int8_compact.tflite" "$LIB/testdata/gamma_compact.int8.delta" "$out" >/dev/null
    cmp "$out" "$LIB/testdata/expected/gamma_compact.int8.tflite"
    log "OK: JUnit passed; patchcli output equals Python's bytes"
}

main "$@"

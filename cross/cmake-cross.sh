#!/usr/bin/env bash
# The cmake that cross/build.sh hands to rdkafka-sys (its `cmake-build`
# feature) for the uplink builds.
#
# librdkafka's CMakeLists turns optional features on when it finds their
# libraries, and a cross build finds the BUILD host's: libcurl (OIDC token
# fetching) and Cyrus SASL (GSSAPI/Kerberos) from /usr. Those can be linked
# into neither an arm64 binary nor a portable glibc-2.28 one, so both are
# turned off here. SASL PLAIN, SCRAM and OAUTHBEARER (without OIDC) remain:
# librdkafka builds them in on top of OpenSSL. Its rdkafka_conf.c still
# includes <curl/curl.h> without curl (an #ifdef on a macro its config.h
# always defines), so an empty stub header is put on the C include path.
# Only the configure call gets the options; `cmake --build` and friends pass
# through unchanged.
set -euo pipefail
for arg in "$@"; do
    case "$arg" in
        --build | --install | -E | -P) exec cmake "$@" ;;
    esac
done
stub="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cmake-stub-include"
exec cmake -DWITH_CURL=OFF -DWITH_SASL=OFF \
    "-DCMAKE_C_STANDARD_INCLUDE_DIRECTORIES=$stub" "$@"

/* Empty on purpose: see cross/cmake-cross.sh.
 *
 * librdkafka 2.12's rdkafka_conf.c includes <curl/curl.h> under
 * `#ifdef WITH_OAUTHBEARER_OIDC`, but its CMake config.h always defines that
 * macro (to 0 when OIDC is off), so the include happens even in a build
 * without libcurl. Nothing from curl is used when WITH_OAUTHBEARER_OIDC is 0,
 * so the cross builds (which have no curl for the target) get this header.
 */
#ifndef TRIBUTARY_CURL_STUB_H
#define TRIBUTARY_CURL_STUB_H
#endif

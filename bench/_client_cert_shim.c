/*
 * LD_PRELOAD shim: gives every OpenSSL context of a process a client certificate.
 *
 * h2load (Debian's nghttp2-client) is a load generator written in C that costs a few
 * microseconds per request, but it has no option for a client certificate, and the cache
 * server authenticates its clients by certificate. OpenSSL's own configuration file
 * cannot add one either (its "system_default" section refuses certificate commands). So
 * this shim wraps SSL_CTX_new: after the real call it loads the certificate chain and key
 * named by KCP_BENCH_CERT / KCP_BENCH_KEY, and, if KCP_BENCH_CA is set, verifies the
 * server against that CA (h2load itself verifies nothing). A handshake that fails
 * (wrong key, unverifiable server) fails the requests, which the benchmark counts.
 *
 * Built by bench/_h2load.py with `cc -shared -fPIC -o shim.so _client_cert_shim.c -ldl`;
 * the OpenSSL prototypes are declared here so that no development headers are needed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;

extern int SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *file);
extern int SSL_CTX_use_PrivateKey_file(SSL_CTX *ctx, const char *file, int type);
extern int SSL_CTX_load_verify_locations(SSL_CTX *ctx, const char *file, const char *path);
extern void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, void *callback);

#define PEM_FILETYPE 1       /* SSL_FILETYPE_PEM */
#define VERIFY_PEER 0x01     /* SSL_VERIFY_PEER */

SSL_CTX *SSL_CTX_new(const SSL_METHOD *method) {
    static SSL_CTX *(*real)(const SSL_METHOD *) = NULL;
    if (real == NULL) {
        real = (SSL_CTX * (*)(const SSL_METHOD *)) dlsym(RTLD_NEXT, "SSL_CTX_new");
    }
    SSL_CTX *ctx = real(method);
    const char *cert = getenv("KCP_BENCH_CERT");
    const char *key = getenv("KCP_BENCH_KEY");
    const char *ca = getenv("KCP_BENCH_CA");
    if (ctx == NULL || cert == NULL || key == NULL) {
        return ctx;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, PEM_FILETYPE) != 1) {
        fprintf(stderr, "client-cert shim: cannot load %s / %s\n", cert, key);
        exit(2);
    }
    if (ca != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
            fprintf(stderr, "client-cert shim: cannot load CA %s\n", ca);
            exit(2);
        }
        SSL_CTX_set_verify(ctx, VERIFY_PEER, NULL);
    }
    return ctx;
}

#include "adworker_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

void adw_tls_describe_last_error(char *detail, size_t size) {
    unsigned long code = ERR_peek_last_error();
    if (detail != NULL && size > 0) {
        if (code != 0) ERR_error_string_n(code, detail, size);
        else detail[0] = 0;
    }
}

void *adw_tls_context_new(int verify_peer) {
    SSL_CTX *context = SSL_CTX_new(TLS_client_method());
    if (context == NULL) return NULL;
    SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
    SSL_CTX_set_verify(context, verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    // A read that met only a session ticket returns instead of blocking for application data,
    // so the caller goes back to its cancellable wait on the socket.
    SSL_CTX_clear_mode(context, SSL_MODE_AUTO_RETRY);
    // Read what the socket has, up to 64 KiB, not one record header and body at a time: a large
    // reply costs a few reads instead of two per 16 KiB record. Records read ahead but not yet
    // decrypted count as pending input (SSL_has_pending), so no wait misses them.
    SSL_CTX_set_read_ahead(context, 1);
    SSL_CTX_set_default_read_buffer_len(context, 64 * 1024);
    return context;
}

void adw_tls_context_free(void *context) { SSL_CTX_free(context); }

int adw_tls_context_trust(void *context, const char *file, char *detail, size_t detail_size) {
    ERR_clear_error();
    int loaded = file != NULL ? SSL_CTX_load_verify_locations(context, file, NULL)
                              : SSL_CTX_set_default_verify_paths(context);
    if (loaded != 1) adw_tls_describe_last_error(detail, detail_size);
    return loaded == 1;
}

int adw_tls_context_identify(void *context, const char *certificate_file, const char *key_file, char *detail, size_t detail_size) {
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(context, certificate_file) != 1
        || SSL_CTX_use_PrivateKey_file(context, key_file, SSL_FILETYPE_PEM) != 1
        || SSL_CTX_check_private_key(context) != 1) {
        adw_tls_describe_last_error(detail, detail_size);
        return 0;
    }
    return 1;
}

static int is_ip_literal(const char *name) {
    unsigned char address[16];
    return inet_pton(AF_INET, name, address) == 1 || inet_pton(AF_INET6, name, address) == 1;
}

static void classify_failure(SSL *session, int result, adw_tls_outcome *outcome) {
    int error = SSL_get_error(session, result);
    int os_error = errno;
    unsigned long code = ERR_peek_last_error();
    int reason = ERR_GET_REASON(code);
    outcome->os_error = 0;
    outcome->reason = reason;
    outcome->verify_result = SSL_get_verify_result(session);
    adw_tls_describe_last_error(outcome->detail, sizeof(outcome->detail));
    if (outcome->verify_result != X509_V_OK) {
        outcome->status = ADW_TLS_CERTIFICATE_REJECTED;
        switch (outcome->verify_result) {
        case X509_V_ERR_CERT_HAS_EXPIRED: outcome->problem = ADW_TLS_EXPIRED; break;
        case X509_V_ERR_CERT_NOT_YET_VALID: outcome->problem = ADW_TLS_NOT_YET_VALID; break;
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH: outcome->problem = ADW_TLS_NAME_MISMATCH; break;
        default: outcome->problem = ADW_TLS_UNTRUSTED; break;
        }
        snprintf(outcome->detail, sizeof(outcome->detail), "%s", X509_verify_cert_error_string(outcome->verify_result));
    } else if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        // The socket's timeout (SO_RCVTIMEO/SO_SNDTIMEO) ran out: OpenSSL sees EAGAIN as "again".
        outcome->status = ADW_TLS_TRANSPORT;
        outcome->os_error = EAGAIN;
        snprintf(outcome->detail, sizeof(outcome->detail), "no handshake reply in time");
    } else if (error == SSL_ERROR_SYSCALL || (error == SSL_ERROR_SSL && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        outcome->status = ADW_TLS_TRANSPORT;
        outcome->os_error = error == SSL_ERROR_SYSCALL ? os_error : 0;
        if (outcome->detail[0] == 0) snprintf(outcome->detail, sizeof(outcome->detail), "%s", os_error ? strerror(os_error) : "connection closed");
    } else if (error == SSL_ERROR_SSL && reason >= SSL_AD_REASON_OFFSET) {
        outcome->status = ADW_TLS_ALERT;
        outcome->alert = reason - SSL_AD_REASON_OFFSET;
        snprintf(outcome->detail, sizeof(outcome->detail), "%s", adw_tls_alert_name(outcome->alert));
    } else if (error == SSL_ERROR_SSL && (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG
                                          || reason == SSL_R_RECORD_LENGTH_MISMATCH || reason == SSL_R_HTTP_REQUEST)) {
        outcome->status = ADW_TLS_NOT_TLS;
    } else {
        outcome->status = ADW_TLS_OTHER;
    }
}

void *adw_tls_handshake(int fd, void *context, const char *server_name, int verify_name, adw_tls_outcome *outcome) {
    memset(outcome, 0, sizeof(*outcome));
    ERR_clear_error();
    SSL *session = SSL_new(context);
    if (session == NULL || SSL_set_fd(session, fd) != 1) {
        outcome->status = ADW_TLS_OTHER;
        adw_tls_describe_last_error(outcome->detail, sizeof(outcome->detail));
        if (session != NULL) SSL_free(session);
        return NULL;
    }
    if (server_name != NULL && !is_ip_literal(server_name)) SSL_set_tlsext_host_name(session, server_name);
    if (server_name != NULL && verify_name) {
        X509_VERIFY_PARAM *parameters = SSL_get0_param(session);
        X509_VERIFY_PARAM_set_hostflags(parameters, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (is_ip_literal(server_name)) X509_VERIFY_PARAM_set1_ip_asc(parameters, server_name);
        else X509_VERIFY_PARAM_set1_host(parameters, server_name, 0);
    }
    errno = 0;
    int result = SSL_connect(session);
    if (result != 1) {
        classify_failure(session, result, outcome);
        SSL_free(session);
        return NULL;
    }
    outcome->status = ADW_TLS_ESTABLISHED;
    return session;
}

void adw_tls_session_free(void *session) { SSL_free(session); }

int adw_tls_await_first_record(void *session, int fd, int timeout_ms, adw_tls_outcome *outcome) {
    memset(outcome, 0, sizeof(*outcome));
    struct pollfd descriptor = { .fd = fd, .events = POLLIN };
    if (!SSL_has_pending(session) && poll(&descriptor, 1, timeout_ms) <= 0) return 1;
    char byte;
    ERR_clear_error();
    errno = 0;
    int result = SSL_peek(session, &byte, 1);
    if (result > 0) return 1;
    int error = SSL_get_error(session, result);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return 1;
    classify_failure(session, result, outcome);
    ERR_clear_error();
    return 0;
}

static void transport_failure(adw_tls_outcome *outcome, int os_error, const char *what) {
    outcome->status = ADW_TLS_TRANSPORT;
    outcome->os_error = os_error;
    snprintf(outcome->detail, sizeof(outcome->detail), "%s: %s", what, os_error ? strerror(os_error) : "connection closed");
}

// A non-blocking connect to one address, waited for up to `timeout_ms`: the socket, or -1 (errno).
static int connect_to(const struct addrinfo *address, int timeout_ms) {
    int fd = socket(address->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int os_error = connect(fd, address->ai_addr, address->ai_addrlen) == 0 ? 0 : errno;
    if (os_error == EINPROGRESS) {
        struct pollfd descriptor = { .fd = fd, .events = POLLOUT };
        socklen_t length = sizeof(os_error);
        if (poll(&descriptor, 1, timeout_ms) <= 0) os_error = ETIMEDOUT;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &os_error, &length) != 0) os_error = errno;
    }
    if (os_error != 0) {
        close(fd);
        errno = os_error;
        return -1;
    }
    return fd;
}

// A blocking socket connected to `host` (its addresses in the resolver's order), with every later
// read and write bounded by `timeout_ms`; -1 with `outcome` saying why not.
static int connect_within(const char *host, int port, int timeout_ms, adw_tls_outcome *outcome) {
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
    struct addrinfo *found = NULL;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    if (getaddrinfo(host, service, &hints, &found) != 0 || found == NULL) {
        transport_failure(outcome, 0, "the name does not resolve");
        return -1;
    }
    int fd = -1;
    int os_error = 0;
    for (const struct addrinfo *address = found; address != NULL && fd < 0; address = address->ai_next) {
        fd = connect_to(address, timeout_ms);
        os_error = errno;
    }
    freeaddrinfo(found);
    if (fd < 0) {
        transport_failure(outcome, os_error, "connect");
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval timeout = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    return fd;
}

int adw_tls_probe_postgres(const char *host, int port, int timeout_ms, void *context, const char *server_name, int verify_name,
                           adw_tls_outcome *outcome) {
    memset(outcome, 0, sizeof(*outcome));
    int fd = connect_within(host, port, timeout_ms, outcome);
    if (fd < 0) return 0;
    // SSLRequest: its length (8) and the code 80877103, both big-endian; the server answers one byte.
    static const unsigned char request[8] = { 0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F };
    char answer = 0;
    errno = 0;
    if (send(fd, request, sizeof(request), MSG_NOSIGNAL) != (ssize_t)sizeof(request)) {
        transport_failure(outcome, errno, "SSLRequest");
        close(fd);
        return 0;
    }
    errno = 0;
    if (recv(fd, &answer, 1, 0) != 1) {
        transport_failure(outcome, errno, "SSLRequest");
        close(fd);
        return 0;
    }
    if (answer != 'S') {
        // 'N': a PostgreSQL server with ssl = off. Anything else is not PostgreSQL answering.
        outcome->status = answer == 'N' ? ADW_TLS_NOT_TLS : ADW_TLS_OTHER;
        snprintf(outcome->detail, sizeof(outcome->detail), answer == 'N' ? "the server declined TLS" : "not a PostgreSQL answer");
        close(fd);
        return 0;
    }
    void *session = adw_tls_handshake(fd, context, server_name, verify_name, outcome);
    int works = session != NULL && adw_tls_await_first_record(session, fd, timeout_ms, outcome);
    if (session != NULL) SSL_free(session);
    close(fd);
    return works;
}

const char *adw_tls_alert_name(int alert) { return SSL_alert_desc_string_long(alert); }

int adw_tls_alert_refuses_client_certificate(int alert) {
    switch (alert) {
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_CERTIFICATE_REQUIRED: return 1;
    default: return 0;
    }
}

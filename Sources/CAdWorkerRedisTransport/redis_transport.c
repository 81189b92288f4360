#include "redis_transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct adw_link {
    redisContext *context;
    SSL *session;
    int last_alert;
};

static void describe_last_error(char *detail, size_t size) {
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
    return context;
}

void adw_tls_context_free(void *context) { SSL_CTX_free(context); }

int adw_tls_context_trust(void *context, const char *file, char *detail, size_t detail_size) {
    ERR_clear_error();
    int loaded = file != NULL ? SSL_CTX_load_verify_locations(context, file, NULL)
                              : SSL_CTX_set_default_verify_paths(context);
    if (loaded != 1) describe_last_error(detail, detail_size);
    return loaded == 1;
}

int adw_tls_context_identify(void *context, const char *certificate_file, const char *key_file, char *detail, size_t detail_size) {
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(context, certificate_file) != 1
        || SSL_CTX_use_PrivateKey_file(context, key_file, SSL_FILETYPE_PEM) != 1
        || SSL_CTX_check_private_key(context) != 1) {
        describe_last_error(detail, detail_size);
        return 0;
    }
    return 1;
}

adw_link *adw_link_new(void *context) {
    adw_link *link = calloc(1, sizeof(adw_link));
    if (link == NULL) return NULL;
    link->context = context;
    return link;
}

void *adw_link_context(adw_link *link) { return link->context; }

int adw_link_fd(adw_link *link) { return link->context->fd; }

void adw_link_free(adw_link *link) {
    if (link == NULL) return;
    // No close_notify: the peer may be gone, and a blocking write to it could stall the thread.
    if (link->session != NULL) SSL_free(link->session);
    redisFree(link->context);
    free(link);
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
    describe_last_error(outcome->detail, sizeof(outcome->detail));
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

int adw_link_start_tls(adw_link *link, void *tls_context, const char *server_name, int verify_name, adw_tls_outcome *outcome) {
    memset(outcome, 0, sizeof(*outcome));
    ERR_clear_error();
    SSL *session = SSL_new(tls_context);
    if (session == NULL || SSL_set_fd(session, link->context->fd) != 1) {
        outcome->status = ADW_TLS_OTHER;
        describe_last_error(outcome->detail, sizeof(outcome->detail));
        if (session != NULL) SSL_free(session);
        return 0;
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
        return 0;
    }
    link->session = session;
    outcome->status = ADW_TLS_ESTABLISHED;
    return 1;
}

int adw_link_await_first_record(adw_link *link, int timeout_ms, adw_tls_outcome *outcome) {
    memset(outcome, 0, sizeof(*outcome));
    if (link->session == NULL) return 1;
    struct pollfd descriptor = { .fd = link->context->fd, .events = POLLIN };
    if (SSL_pending(link->session) == 0 && poll(&descriptor, 1, timeout_ms) <= 0) return 1;
    char byte;
    ERR_clear_error();
    errno = 0;
    int result = SSL_peek(link->session, &byte, 1);
    if (result > 0) return 1;
    int error = SSL_get_error(link->session, result);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return 1;
    classify_failure(link->session, result, outcome);
    ERR_clear_error();
    return 0;
}

// Leaves the error in the context as hiredis would (errno kept for the caller to read).
static void set_error(adw_link *link, int type, const char *text) {
    int saved = errno;
    redisContext *context = link->context;
    context->err = type;
    if (text != NULL) snprintf(context->errstr, sizeof(context->errstr), "%s", text);
    else snprintf(context->errstr, sizeof(context->errstr), "%s", strerror(saved));
    errno = saved;
}

// A failed SSL_read or SSL_write: 1 when it only asks to be called again. A read may: it met only
// a session ticket, or the socket's timeout ran out mid-record, and the caller's wait, bounded by
// its own deadline, comes first. A write may not: as hiredis's blocking write, a timeout is an error.
static int session_failed(adw_link *link, int result, int reading) {
    int error = SSL_get_error(link->session, result);
    int saved = errno;
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        if (reading) return 1;
        errno = EAGAIN;
        set_error(link, REDIS_ERR_IO, NULL);
        ERR_clear_error();
        return 0;
    }
    unsigned long code = ERR_peek_last_error();
    int reason = ERR_GET_REASON(code);
    if (error == SSL_ERROR_ZERO_RETURN || (error == SSL_ERROR_SSL && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        set_error(link, REDIS_ERR_EOF, "Server closed the connection");
    } else if (error == SSL_ERROR_SYSCALL) {
        errno = saved;
        set_error(link, REDIS_ERR_IO, saved == 0 ? "Server closed the connection" : NULL);
    } else {
        if (error == SSL_ERROR_SSL && reason >= SSL_AD_REASON_OFFSET) link->last_alert = reason - SSL_AD_REASON_OFFSET;
        char text[128];
        describe_last_error(text, sizeof(text));
        errno = 0;
        set_error(link, REDIS_ERR_IO, text);
    }
    ERR_clear_error();
    return 0;
}

int adw_link_write(adw_link *link, int *done) {
    redisContext *context = link->context;
    if (link->session == NULL) return redisBufferWrite(context, done);
    if (context->err) return REDIS_ERR;
    size_t length = sdslen(context->obuf);
    if (length > 0) {
        ERR_clear_error();
        errno = 0;
        int written = SSL_write(link->session, context->obuf, (int)length);
        if (written <= 0) {
            if (!session_failed(link, written, 0)) return REDIS_ERR;
        } else if ((size_t)written == length) {
            sdsfree(context->obuf);
            context->obuf = sdsempty();
        } else {
            sdsrange(context->obuf, written, -1);
        }
    }
    if (done != NULL) *done = sdslen(context->obuf) == 0;
    return REDIS_OK;
}

int adw_link_read(adw_link *link) {
    redisContext *context = link->context;
    if (link->session == NULL) return redisBufferRead(context);
    if (context->err) return REDIS_ERR;
    char buffer[16 * 1024];
    ERR_clear_error();
    errno = 0;
    int count = SSL_read(link->session, buffer, sizeof(buffer));
    if (count <= 0) return session_failed(link, count, 1) ? REDIS_OK : REDIS_ERR;
    if (redisReaderFeed(context->reader, buffer, count) != REDIS_OK) {
        errno = 0;
        set_error(link, context->reader->err, context->reader->errstr);
        return REDIS_ERR;
    }
    return REDIS_OK;
}

int adw_link_has_buffered_input(adw_link *link) { return link->session != NULL && SSL_pending(link->session) > 0; }

int adw_link_last_alert(adw_link *link) { return link->last_alert; }

const char *adw_tls_alert_name(int alert) { return SSL_alert_desc_string_long(alert); }

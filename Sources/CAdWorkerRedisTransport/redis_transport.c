#include "redis_transport.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct adw_link {
    redisContext *context;
    SSL *session;
    int last_alert;
};

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

int adw_link_start_tls(adw_link *link, void *tls_context, const char *server_name, int verify_name, adw_tls_outcome *outcome) {
    link->session = adw_tls_handshake(link->context->fd, tls_context, server_name, verify_name, outcome);
    return link->session != NULL;
}

int adw_link_await_first_record(adw_link *link, int timeout_ms, adw_tls_outcome *outcome) {
    memset(outcome, 0, sizeof(*outcome));
    return link->session == NULL || adw_tls_await_first_record(link->session, link->context->fd, timeout_ms, outcome);
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
        adw_tls_describe_last_error(text, sizeof(text));
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
    // One SSL_read gives at most one record (16 KiB): take every record already received, so a
    // large reply is fed to the reader, and waited for, in a few large steps, not many small ones.
    char buffer[64 * 1024];
    size_t filled = 0;
    do {
        ERR_clear_error();
        errno = 0;
        int count = SSL_read(link->session, buffer + filled, (int)(sizeof(buffer) - filled));
        if (count <= 0) {
            // What came before a failure is fed first; the next read meets the failure again.
            if (filled > 0) break;
            return session_failed(link, count, 1) ? REDIS_OK : REDIS_ERR;
        }
        filled += (size_t)count;
    } while (filled < sizeof(buffer) && SSL_has_pending(link->session));
    ERR_clear_error();
    if (redisReaderFeed(context->reader, buffer, filled) != REDIS_OK) {
        errno = 0;
        set_error(link, context->reader->err, context->reader->errstr);
        return REDIS_ERR;
    }
    return REDIS_OK;
}

int adw_link_has_buffered_input(adw_link *link) { return link->session != NULL && SSL_has_pending(link->session); }

int adw_link_last_alert(adw_link *link) { return link->last_alert; }


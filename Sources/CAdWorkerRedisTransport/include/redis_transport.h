#ifndef ADWORKER_REDIS_TRANSPORT_H
#define ADWORKER_REDIS_TRANSPORT_H

#include <stddef.h>

/// A hiredis context and, over TLS, the OpenSSL session on its socket. hiredis still formats
/// commands into the context's output buffer and parses replies from its reader; these functions
/// move the bytes, through OpenSSL when a session is there and through the socket otherwise, and
/// leave errors in the context (err, errstr, errno) exactly as redisBufferRead/Write do.
typedef struct adw_link adw_link;

/// Why a TLS handshake did not complete, decided from OpenSSL's codes, never its messages.
typedef enum adw_tls_status {
    ADW_TLS_ESTABLISHED = 0,
    /// The server's certificate did not verify: `verify_result` is the X509_V_ERR_* code.
    ADW_TLS_CERTIFICATE_REJECTED = 1,
    /// The server answered with bytes that are not TLS (a plaintext port).
    ADW_TLS_NOT_TLS = 2,
    /// The server ended the handshake with an alert: `alert` is its TLS alert number (bad
    /// certificate, certificate required: it wants a client certificate it did not get or trust).
    ADW_TLS_ALERT = 3,
    /// The connection broke or timed out during the handshake: `os_error` is errno, 0 for EOF.
    ADW_TLS_TRANSPORT = 4,
    /// Anything else OpenSSL refused: `reason` is ERR_GET_REASON of its last error.
    ADW_TLS_OTHER = 5,
} adw_tls_status;

/// What is wrong with a rejected server certificate, from its X509_V_ERR_* code.
typedef enum adw_tls_certificate_problem {
    ADW_TLS_UNTRUSTED = 0,
    ADW_TLS_EXPIRED = 1,
    ADW_TLS_NOT_YET_VALID = 2,
    ADW_TLS_NAME_MISMATCH = 3,
} adw_tls_certificate_problem;

typedef struct adw_tls_outcome {
    adw_tls_status status;
    adw_tls_certificate_problem problem;
    long verify_result;
    int alert;
    int os_error;
    int reason;
    /// OpenSSL's own words (the alert's or the verification's name), for people; nothing
    /// decides on them.
    char detail[200];
} adw_tls_outcome;

/// A client TLS context (an SSL_CTX). Returns NULL only when OpenSSL cannot allocate.
void *adw_tls_context_new(int verify_peer);
void adw_tls_context_free(void *context);
/// Trusts the PEM certificates in `file`, or the system's store when `file` is NULL. Returns 1,
/// or 0 with OpenSSL's words in `detail`.
int adw_tls_context_trust(void *context, const char *file, char *detail, size_t detail_size);
/// Presents `certificate_file` with `key_file` (PEM) for mutual TLS. Returns 1, or 0 (detail).
int adw_tls_context_identify(void *context, const char *certificate_file, const char *key_file, char *detail, size_t detail_size);

/// Takes ownership of `context` (a redisContext *), plaintext until adw_link_start_tls.
adw_link *adw_link_new(void *context);
/// The hiredis context: commands are appended to it, replies parsed from it.
void *adw_link_context(adw_link *link);
int adw_link_fd(adw_link *link);
/// Frees the session, the context, and closes the socket.
void adw_link_free(adw_link *link);

/// Runs the client handshake on the link's (blocking, timed) socket. `server_name` is sent as SNI
/// (unless an IP literal) and verified against the certificate's names when `verify_name` is 1.
/// Returns 1 when established; 0 with `outcome` saying why not.
int adw_link_start_tls(adw_link *link, void *tls_context, const char *server_name, int verify_name, adw_tls_outcome *outcome);

/// Waits up to `timeout_ms` for the server's first record after the handshake, writing nothing:
/// TLS 1.3 refuses a client certificate only after the client's handshake ended, with an alert
/// that a request written meanwhile can lose (the server's close then resets the connection).
/// Returns 0 with `outcome` when that record is an alert or the connection ended; 1 otherwise
/// (a session ticket, or nothing within the time).
int adw_link_await_first_record(adw_link *link, int timeout_ms, adw_tls_outcome *outcome);

/// Like redisBufferWrite: writes the context's output buffer; `*done` is 1 once it is empty.
int adw_link_write(adw_link *link, int *done);
/// Like redisBufferRead: one read into the context's reader. Over TLS a read that decrypted only
/// handshake messages (a session ticket) feeds nothing and returns 0 (REDIS_OK).
int adw_link_read(adw_link *link);
/// Bytes already decrypted and waiting in the session: read them before waiting on the socket.
int adw_link_has_buffered_input(adw_link *link);
/// The TLS alert number that ended the session in the last failed read or write, or 0.
int adw_link_last_alert(adw_link *link);
/// The alert's name, as the TLS specification gives it ("certificate required").
const char *adw_tls_alert_name(int alert);

#endif

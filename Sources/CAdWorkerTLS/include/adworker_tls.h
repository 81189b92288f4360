#ifndef ADWORKER_TLS_H
#define ADWORKER_TLS_H

#include <stddef.h>

/// OpenSSL client sessions on a connected socket, for Redis (CAdWorkerRedisTransport moves a
/// connection's bytes through them) and for diagnosing why PostgreSQL over TLS failed (libpq
/// keeps OpenSSL's codes to itself and says only words).

/// Why a TLS handshake did not complete, decided from OpenSSL's codes, never its messages.
typedef enum adw_tls_status {
    ADW_TLS_ESTABLISHED = 0,
    /// The server's certificate did not verify: `verify_result` is the X509_V_ERR_* code.
    ADW_TLS_CERTIFICATE_REJECTED = 1,
    /// The server does not speak TLS there: it answered with bytes that are not TLS (a plaintext
    /// Redis port), or declined it (PostgreSQL's 'N' to an SSLRequest: ssl = off).
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

/// Runs the client handshake on the connected, blocking, timed socket `fd`. `server_name` is sent
/// as SNI (unless an IP literal) and verified against the certificate's names when `verify_name`
/// is 1. Returns the session (an SSL *, to free with adw_tls_session_free), or NULL with
/// `outcome` saying why not.
void *adw_tls_handshake(int fd, void *context, const char *server_name, int verify_name, adw_tls_outcome *outcome);
void adw_tls_session_free(void *session);

/// Waits up to `timeout_ms` for the server's first record after the handshake, writing nothing:
/// TLS 1.3 refuses a client certificate only after the client's handshake ended, with an alert
/// that a request written meanwhile can lose (the server's close then resets the connection).
/// Returns 0 with `outcome` when that record is an alert or the connection ended; 1 otherwise
/// (a session ticket, or nothing within the time).
int adw_tls_await_first_record(void *session, int fd, int timeout_ms, adw_tls_outcome *outcome);

/// Asks the PostgreSQL server at `host` (a name or an address; each address it resolves to is
/// tried in turn) and `port` for TLS as libpq does (an SSLRequest), then shakes hands and waits for
/// a refusal of the client's certificate, each step within `timeout_ms`. Returns 1 when TLS works
/// there, 0 with `outcome` saying why not.
int adw_tls_probe_postgres(const char *host, int port, int timeout_ms, void *context, const char *server_name, int verify_name,
                           adw_tls_outcome *outcome);

/// The alert's name, as the TLS specification gives it ("certificate required").
const char *adw_tls_alert_name(int alert);
/// 1 when `alert` is one a server sends a client whose certificate it will not take (none sent,
/// untrusted, expired, revoked, unsupported), so the fix is the client certificate.
int adw_tls_alert_refuses_client_certificate(int alert);
/// OpenSSL's words for the last error of this thread's queue, in `detail` (empty when none).
void adw_tls_describe_last_error(char *detail, size_t size);

#endif

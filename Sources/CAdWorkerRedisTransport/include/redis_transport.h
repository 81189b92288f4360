#ifndef ADWORKER_REDIS_TRANSPORT_H
#define ADWORKER_REDIS_TRANSPORT_H

#include <stddef.h>

#include "adworker_tls.h"

/// A hiredis context and, over TLS, the OpenSSL session on its socket. hiredis still formats
/// commands into the context's output buffer and parses replies from its reader; these functions
/// move the bytes, through OpenSSL when a session is there and through the socket otherwise, and
/// leave errors in the context (err, errstr, errno) exactly as redisBufferRead/Write do.
typedef struct adw_link adw_link;

/// Takes ownership of `context` (a redisContext *), plaintext until adw_link_start_tls.
adw_link *adw_link_new(void *context);
/// The hiredis context: commands are appended to it, replies parsed from it.
void *adw_link_context(adw_link *link);
int adw_link_fd(adw_link *link);
/// Frees the session, the context, and closes the socket.
void adw_link_free(adw_link *link);

/// adw_tls_handshake on the link's (blocking, timed) socket; the session is the link's from then
/// on. Returns 1 when established; 0 with `outcome` saying why not.
int adw_link_start_tls(adw_link *link, void *tls_context, const char *server_name, int verify_name, adw_tls_outcome *outcome);

/// adw_tls_await_first_record on the link's session (1 at once without one).
int adw_link_await_first_record(adw_link *link, int timeout_ms, adw_tls_outcome *outcome);

/// Like redisBufferWrite: writes the context's output buffer; `*done` is 1 once it is empty.
int adw_link_write(adw_link *link, int *done);
/// Like redisBufferRead: one read into the context's reader (over TLS, every record already
/// received, up to 64 KiB). Over TLS a read that decrypted only handshake messages (a session
/// ticket) feeds nothing and returns 0 (REDIS_OK).
int adw_link_read(adw_link *link);
/// Bytes already received and waiting in the session (decrypted or not): read them before
/// waiting on the socket.
int adw_link_has_buffered_input(adw_link *link);
/// The TLS alert number that ended the session in the last failed read or write, or 0.
int adw_link_last_alert(adw_link *link);
#endif

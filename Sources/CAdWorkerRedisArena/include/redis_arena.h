#ifndef ADWORKER_REDIS_ARENA_H
#define ADWORKER_REDIS_ARENA_H

#include <stddef.h>
#include <stdint.h>

/// One node of a reply, in the order hiredis parses them (an array before its elements).
/// `type` is a REDIS_REPLY_* value; strings (bulk, status, error) are `length` bytes at `offset`
/// in the arena's bytes; an integer's value is in `offset`; an array has `elements`.
typedef struct adw_token {
    int32_t type;
    int32_t elements;
    int64_t offset;
    int64_t length;
} adw_token;

/// A reply flattened into two growing buffers that are reused from reply to reply, instead of
/// one allocated redisReply per element (XREADGROUP: two dozen per stream entry).
typedef struct adw_arena {
    unsigned char *bytes;
    size_t length;
    size_t capacity;
    adw_token *tokens;
    size_t count;
    size_t token_capacity;
    int out_of_memory;
} adw_arena;

void adw_arena_free(adw_arena *arena);

/// Empties `arena` before a new reply is parsed into it.
void adw_arena_reset(adw_arena *arena);

/// Parses what `context` (a redisContext *) has buffered into `arena`, without any I/O, like
/// redisGetReplyFromReader: `*complete` is 1 once a whole reply is there; until then, read more
/// (redisBufferRead) and call again, without resetting. Returns 0 (REDIS_OK) or -1 (REDIS_ERR:
/// the context's err and errstr say why).
int adw_arena_reply_from_reader(void *context, adw_arena *arena, int *complete);

#endif

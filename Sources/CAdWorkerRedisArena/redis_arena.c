#include "redis_arena.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

// Each connection parses on its own thread, so a thread-local names the arena being filled; that
// keeps this independent of how a hiredis version passes the reader's privdata to its tasks.
static __thread adw_arena *filling;

static int push_token(int32_t type, int32_t elements, int64_t offset, int64_t length) {
    adw_arena *arena = filling;
    if (arena->count == arena->token_capacity) {
        size_t capacity = arena->token_capacity ? arena->token_capacity * 2 : 4096;
        adw_token *tokens = realloc(arena->tokens, capacity * sizeof(adw_token));
        if (tokens == NULL) { arena->out_of_memory = 1; return 0; }
        arena->tokens = tokens;
        arena->token_capacity = capacity;
    }
    arena->tokens[arena->count++] = (adw_token){ type, elements, offset, length };
    return 1;
}

static void *create_string(const redisReadTask *task, char *text, size_t length) {
    adw_arena *arena = filling;
    if (arena->length + length > arena->capacity) {
        size_t capacity = arena->capacity ? arena->capacity : 65536;
        while (capacity < arena->length + length) capacity *= 2;
        unsigned char *bytes = realloc(arena->bytes, capacity);
        if (bytes == NULL) { arena->out_of_memory = 1; return NULL; }
        arena->bytes = bytes;
        arena->capacity = capacity;
    }
    memcpy(arena->bytes + arena->length, text, length);
    int64_t offset = (int64_t)arena->length;
    arena->length += length;
    return push_token(task->type, 0, offset, (int64_t)length) ? arena : NULL;
}

static void *create_array(const redisReadTask *task, int elements) {
    (void)task;
    return push_token(REDIS_REPLY_ARRAY, elements, 0, 0) ? filling : NULL;
}

static void *create_integer(const redisReadTask *task, long long value) {
    (void)task;
    return push_token(REDIS_REPLY_INTEGER, 0, value, 0) ? filling : NULL;
}

static void *create_nil(const redisReadTask *task) {
    (void)task;
    return push_token(REDIS_REPLY_NIL, 0, 0, 0) ? filling : NULL;
}

// The objects are the arena itself; it is freed by its owner.
static void free_object(void *object) {
    (void)object;
}

static redisReplyObjectFunctions arena_functions = {
    create_string, create_array, create_integer, create_nil, free_object,
};

void adw_arena_free(adw_arena *arena) {
    free(arena->bytes);
    free(arena->tokens);
    *arena = (adw_arena){ 0 };
}

void adw_arena_reset(adw_arena *arena) {
    arena->length = 0;
    arena->count = 0;
    arena->out_of_memory = 0;
}

int adw_arena_reply_from_reader(void *context, adw_arena *arena, int *complete) {
    redisContext *redis = context;
    redisReader *reader = redis->reader;
    redisReplyObjectFunctions *saved = reader->fn;
    filling = arena;
    reader->fn = &arena_functions;
    // Every object of an arena reply is the arena itself, so an unfinished reply's root is too.
    // hiredis keeps that root in `reader->reply` and frees it with the reader's functions when the
    // context is freed (a connection given up mid-reply): it holds it only during this call.
    if (reader->ridx >= 0) reader->reply = arena;
    void *reply = NULL;
    int status = redisGetReplyFromReader(redis, &reply);
    reader->reply = NULL;
    reader->fn = saved;
    filling = NULL;
    *complete = reply != NULL;
    return status;
}

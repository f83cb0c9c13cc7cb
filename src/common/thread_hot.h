/* thread_hot.h — the per-thread words that a traced heap operation touches, in one
 * initial-exec TLS block: one address computation serves them all, where a variable each cost
 * an instruction more per access (and, in the shared library, a GOT load each). The names
 * below are the variables they replace; each is documented where it is defined. */
#ifndef HT_COMMON_THREAD_HOT_H
#define HT_COMMON_THREAD_HOT_H

#include <stdatomic.h>
#include <stdint.h>

struct ht_tbuf;

typedef struct ht_thread_hot {
    uint64_t stamp;           /* ht__t_stamp (src/trace/session.c) */
    uint64_t gen;             /* ht__t_gen (src/trace/buffer.c) */
    struct ht_tbuf *buf;      /* ht__t_buf (src/trace/buffer.c) */
    uint64_t seq;             /* ht__trace_seq (src/trace/session.c) */
    int in_stack;             /* ht__t_in_stack (src/trace/buffer.c) */
    uint32_t tagbits;         /* ht__t_tagbits (src/heap/tcache.c) */
    uint32_t tagcmp;          /* ht__t_tagcmp (src/heap/tcache.c) */
    _Atomic uint32_t in_call; /* ht__t_in_call: 1 inside a heap call (src/heap/internal.h) */
} ht_thread_hot;

/* tagcmp while the thread has no tag: no block's masked tag bits equal it. */
#define HT_TAG_CMP_NONE 1u

/* Defined in src/common/os.c, with tagcmp = HT_TAG_CMP_NONE. */
extern __thread ht_thread_hot ht__thot __attribute__((tls_model("initial-exec")));

#define ht__t_stamp    (ht__thot.stamp)
#define ht__t_gen      (ht__thot.gen)
#define ht__t_buf      (ht__thot.buf)
#define ht__trace_seq  (ht__thot.seq)
#define ht__t_in_stack (ht__thot.in_stack)
#define ht__t_tagbits  (ht__thot.tagbits)
#define ht__t_tagcmp   (ht__thot.tagcmp)
#define ht__t_in_call  (ht__thot.in_call)

#endif
